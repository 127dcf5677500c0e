"""Factories for verification tests: policy bundles with changes, real records, clients."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.domain.identifiers import is_valid_uscc, org_code_check_char, uscc_check_char
from tests.conftest import REPO, Installation, bearer, get_token

PURPOSE = "credit_assessment"
SERVICE = "enterprise-registration"


def policy_copy(target: Path, change: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """The demo bundle copied to `target`, with `change` applied to the merged sections."""
    shutil.copytree(REPO / "policies", target)
    if change is None:
        return target
    merged: dict[str, Any] = {}
    for path in sorted(target.glob("*.yaml")):
        merged.update(yaml.safe_load(path.read_text()) or {})
        path.unlink()
    change(merged)
    (target / "bundle.yaml").write_text(yaml.safe_dump(merged, allow_unicode=True, sort_keys=False))
    return target


def enterprises(inst: Installation, limit: int = 50) -> list[dict[str, Any]]:
    """Rows of the enterprise register as the data provider delivered them: the test's oracle."""
    table = pq.read_table(
        inst.source / "enterprise_registry.parquet",
        columns=["credit_code", "name", "legal_representative", "status", "registered_capital"],
    )
    rows: list[dict[str, Any]] = sorted(table.to_pylist(), key=lambda r: r["credit_code"])
    return rows[:limit]


def valid_unknown_code(inst: Installation) -> str:
    """A credit code with correct check characters that no enterprise of the demo data holds."""
    taken = {e["credit_code"] for e in enterprises(inst, 10**9)}
    for n in range(1000):
        org = f"MA{n:06d}"
        body = "91110000" + org + org_code_check_char(org)
        code = body + uscc_check_char(body)
        if is_valid_uscc(code) and code not in taken:
            return code
    raise AssertionError("no free credit code")


@dataclass
class Gateway:
    client: TestClient
    headers: dict[str, str]
    installation: Installation

    def verify(self, claims: list[dict[str, Any]], *, service: str = SERVICE, purpose: str = PURPOSE) -> Any:
        return self.client.post(
            f"/v1/verify/{service}", json={"purpose": purpose, "claims": claims}, headers=self.headers
        )


@pytest.fixture
def gateway_for(installation: Installation, tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    made: list[TestClient] = []

    def factory(change: Callable[[dict[str, Any]], None] | None = None, who: str = "demo-business") -> Gateway:
        policies = policy_copy(tmp_path / f"policies-{len(made)}", change)
        settings = installation.settings.model_copy(update={"policy_dir": policies})
        # Serve exactly this bundle: forget any bundle an earlier gateway of the test put in force.
        shutil.rmtree(settings.policy_store_dir, ignore_errors=True)
        client = TestClient(create_app(settings))
        made.append(client)
        token = get_token(client, who, installation.credentials[who])
        return Gateway(client, bearer(token), installation)

    yield factory
    for client in made:
        client.close()
