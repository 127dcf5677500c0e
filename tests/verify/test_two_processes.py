"""Two gateway processes on one state directory: a quota and a probing limit hold across both,
and an emergency stop made through one is in force in the other on its next request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.conftest import Installation, policy_copy, serve_process
from tests.verify.conftest import enterprises


@pytest.fixture
def two_servers(installation: Installation, tmp_path: Path) -> Iterator[list[str]]:
    def tight(bundle: dict[str, Any]) -> None:
        bundle["grants"]["bank-sme-credit-2026"]["quotas"] = {"daily_claims": 12}
        bundle["verification_services"]["enterprise-registration"]["limits"].update(probe_checks_per_key=3)

    policies = policy_copy(tmp_path / "policies", tight)
    config = tmp_path / "veilgate.toml"
    config.write_text(f'state_dir = "{installation.settings.state_dir}"\npolicy_dir = "{policies}"\n')
    with serve_process(config) as (first, _one), serve_process(config) as (second, _two):
        yield [first, second]


def _token(base: str, installation: Installation, who: str) -> dict[str, str]:
    form = {"grant_type": "client_credentials", "client_id": who, "client_secret": installation.credentials[who]}
    return {"Authorization": f"Bearer {httpx2.post(f'{base}/v1/token', data=form).json()['access_token']}"}


def test_limits_and_freezes_hold_across_processes(two_servers: list[str], installation: Installation) -> None:
    first, second = two_servers
    bank = _token(first, installation, "demo-business")
    rows = enterprises(installation, 20)

    def verify(base: str, index: int, checks: dict[str, Any] | None = None) -> httpx2.Response:
        claim = {"keys": {"credit_code": rows[index]["credit_code"]}, "checks": checks or {"active": True}}
        body = {"purpose": "credit_assessment", "claims": [claim]}
        return httpx2.post(f"{base}/v1/verify/enterprise-registration", json=body, headers=bank)

    # The probing limit (3 questions about one entity), asked alternately through both processes.
    asked = [verify((first, second)[i % 2], 19, {"name": f"guess {i}"}) for i in range(4)]
    assert [r.status_code for r in asked] == [200, 200, 200, 429]
    assert "different questions about one entity" in asked[3].json()["detail"]

    # The rest of the daily quota of 12 claims (3 used), spent alternately through both.
    statuses = [verify((first, second)[i % 2], i).status_code for i in range(11)]
    assert statuses[:9] == [200] * 9 and statuses[9:] == [429, 429]
    assert "daily quota of 12 claims" in verify(first, 15).json()["detail"]

    # An emergency stop through one process is in force in the other.
    admin = _token(second, installation, "demo-admin")
    body = {"kind": "consumer", "name": "demo-business", "reason": "incident"}
    assert httpx2.post(f"{second}/v1/admin/freeze", json=body, headers=admin).status_code == 201
    refused = httpx2.post(
        f"{first}/v1/verify/enterprise-registration",
        json={
            "purpose": "credit_assessment",
            "claims": [{"keys": {"credit_code": rows[0]["credit_code"]}, "checks": {"active": True}}],
        },
        headers=bank,
    )
    assert refused.status_code == 403 and refused.json()["type"].endswith("/frozen")
