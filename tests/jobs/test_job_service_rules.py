"""Job services run code on the data, so no one administrator may approve a job, or change a job
service, alone: a job service with one reviewer, or job services in an installation whose policy
changes take one approval, are refused by `policy check`, by a proposal and at startup."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gateway.catalog import CatalogStore
from gateway.cli import app as cli
from gateway.errors import PolicyInvalid
from gateway.services import policy_check
from gateway.services.runtime import Runtime
from tests.conftest import Installation, policy_copy


def _one_reviewer(bundle: dict[str, Any]) -> None:
    bundle["job_services"]["enterprise-tables"]["reviewers"] = 1


def _errors(directory: Path, installation: Installation, approvals: int = 2) -> list[str]:
    catalog = CatalogStore(installation.settings.data_path)
    _bundle, located = policy_check.check(directory, catalog, policy_approvals=approvals)
    return [str(e) for e in located]


def test_a_job_service_with_one_reviewer_is_refused(installation: Installation, tmp_path: Path) -> None:
    errors = _errors(policy_copy(tmp_path / "p", _one_reviewer), installation)
    assert any(
        "job_services.enterprise-tables.reviewers: a job service needs 2: nobody approves a job alone" in e
        for e in errors
    ), errors


def test_job_services_need_two_policy_approvals(installation: Installation, tmp_path: Path) -> None:
    policies = policy_copy(tmp_path / "p")
    assert _errors(policies, installation) == []
    errors = _errors(policies, installation, approvals=1)
    assert any(
        "job_services.enterprise-tables: job services need the setting policy_approvals = 2" in e for e in errors
    )

    # without job services, one approval is the installation's choice
    def without_jobs(bundle: dict[str, Any]) -> None:
        jobs = set(bundle.pop("job_services"))
        for grant in bundle["grants"].values():
            grant["services"] = [s for s in grant["services"] if s not in jobs]

    no_jobs = policy_copy(tmp_path / "q", without_jobs)
    assert _errors(no_jobs, installation, approvals=1) == []
    # the command line reads the setting
    config = tmp_path / "veilgate.toml"
    config.write_text(f'state_dir = "{installation.settings.state_dir}"\npolicy_approvals = 1\n')
    checked = CliRunner().invoke(cli, ["policy", "check", str(policies), "--config", str(config)])
    assert checked.exit_code == 1 and "policy_approvals = 2" in checked.output


def test_a_gateway_with_one_policy_approval_and_job_services_does_not_start(installation: Installation) -> None:
    settings = installation.settings.model_copy(update={"policy_approvals": 1})
    with pytest.raises(PolicyInvalid) as refused:
        Runtime.open(settings).close()
    assert "policy_approvals = 2" in str(refused.value)
