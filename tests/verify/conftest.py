"""Factories for verification tests: policy bundles with changes, real records, clients."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from gateway.domain.identifiers import is_valid_uscc, org_code_check_char, uscc_check_char
from tests.conftest import Installation, bearer, get_token

PURPOSE = "credit_assessment"
SERVICE = "enterprise-registration"


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
def gateway_for(installation: Installation, bundle_app: Callable[..., TestClient]) -> Callable[..., Gateway]:
    def factory(change: Callable[[dict[str, Any]], None] | None = None, who: str = "demo-business") -> Gateway:
        client = bundle_app(change)
        return Gateway(client, bearer(get_token(client, who, installation.credentials[who])), installation)

    return factory
