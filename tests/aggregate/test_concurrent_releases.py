"""Two gateway processes on one state, on SQLite (one state directory) and on PostgreSQL (when
VEILGATE_TEST_PG_DSN is set): 200 simultaneous releases against a budget that admits exactly 10
release exactly 10 and the ledger shows exactly the budget spent; 20 simultaneous copies of one
fresh question get one answer, charged once."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.aggregate.conftest import PURPOSE
from tests.conftest import ON_POSTGRES, PG_DSN, Installation, pg_schema, policy_copy, serve_process

REQUESTS = 200


@pytest.fixture(params=["sqlite", ON_POSTGRES])
def two_servers(request: pytest.FixtureRequest, installation: Installation, tmp_path: Path) -> Iterator[list[str]]:
    def ten_releases(bundle: dict[str, Any]) -> None:
        bundle["grants"]["labour-research-2026"]["budget"] = {"epsilon": "1"}  # ten releases of 0.1

    policies = policy_copy(tmp_path / "policies", ten_releases)
    config = tmp_path / "veilgate.toml"
    lines = [f'state_dir = "{installation.settings.state_dir}"', f'policy_dir = "{policies}"']
    with contextlib.ExitStack() as stack:
        if request.param == "postgres":
            schema = stack.enter_context(pg_schema())
            lines += [f'database_dsn = "{PG_DSN}"', f'database_schema = "{schema}"']
            for trail in installation.settings.audit_dir.glob("log.sqlite3*"):
                trail.unlink()  # a new installation on PostgreSQL: no trail of its own in a file
        config.write_text("\n".join(lines) + "\n")
        with serve_process(config) as (first, _one), serve_process(config) as (second, _two):
            yield [first, second]


async def _fire(servers: list[str], token: str) -> list[httpx2.Response]:
    headers = {"Authorization": f"Bearer {token}"}
    start = date(2020, 1, 1)

    async with httpx2.AsyncClient(timeout=120, limits=httpx2.Limits(max_connections=REQUESTS)) as client:

        async def one(i: int) -> httpx2.Response:
            # 200 different questions (different month ranges): no release is a replay of another
            body = {
                "purpose": PURPOSE,
                "parameters": {
                    "filters": {"month": {"from": start.isoformat(), "to": (start + timedelta(i)).isoformat()}}
                },
                "epsilon": "0.1",
            }
            return await client.post(f"{servers[i % 2]}/v1/aggregate/contributors-count", json=body, headers=headers)

        return list(await asyncio.gather(*(one(i) for i in range(REQUESTS))))


def test_exactly_the_budget_is_released_under_contention(two_servers: list[str], installation: Installation) -> None:
    form = {
        "grant_type": "client_credentials",
        "client_id": "demo-researcher",
        "client_secret": installation.credentials["demo-researcher"],
    }
    token = httpx2.post(f"{two_servers[0]}/v1/token", data=form).json()["access_token"]
    responses = asyncio.run(_fire(two_servers, token))
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: 10, 409: 190}, statuses
    assert all("grant's budget" in r.json()["detail"] for r in responses if r.status_code == 409)
    released = [r.json() for r in responses if r.status_code == 200]
    assert all(r["privacy_spent"] == {"epsilon": "0.1", "delta": "0"} for r in released)
    assert len({r["result"]["parameters"]["filters"]["month"]["to"] for r in released}) == 10
    for base in two_servers:  # both processes see the same ledger
        view = httpx2.get(f"{base}/v1/budget", headers={"Authorization": f"Bearer {token}"}).json()
        (levels,) = [b["levels"] for b in view["budgets"] if b["dataset"] == "social_insurance"]
        assert levels["grant"]["spent"]["epsilon"] == "1"
        assert levels["grant"]["reserved"]["epsilon"] == "0"
        assert levels["organisation"]["spent"]["epsilon"] == "1"
        assert levels["dataset_version"]["spent"]["epsilon"] == "1"


COPIES = 20


async def _copies(servers: list[str], token: str) -> list[httpx2.Response]:
    """COPIES simultaneous copies of one fresh question, spread over both processes."""
    headers = {"Authorization": f"Bearer {token}"}
    body = {"purpose": PURPOSE, "parameters": {"group_by": ["region"]}, "epsilon": "0.3"}
    async with httpx2.AsyncClient(timeout=120, limits=httpx2.Limits(max_connections=COPIES)) as client:
        return list(
            await asyncio.gather(
                *(
                    client.post(f"{servers[i % 2]}/v1/aggregate/contributors-count", json=body, headers=headers)
                    for i in range(COPIES)
                )
            )
        )


def test_simultaneous_copies_of_one_question_are_charged_once(
    two_servers: list[str], installation: Installation
) -> None:
    form = {
        "grant_type": "client_credentials",
        "client_id": "demo-researcher",
        "client_secret": installation.credentials["demo-researcher"],
    }
    token = httpx2.post(f"{two_servers[0]}/v1/token", data=form).json()["access_token"]
    responses = asyncio.run(_copies(two_servers, token))
    assert [r.status_code for r in responses] == [200] * COPIES, [r.text for r in responses if r.status_code != 200]
    results = [r.json()["result"] for r in responses]
    assert all(r["rows"] == results[0]["rows"] for r in results)  # one question, one answer
    paid = [r.json()["privacy_spent"] for r in responses if not r.json()["result"]["replayed"]]
    assert paid == [{"epsilon": "0.3", "delta": "0"}]  # one charge; the others were replayed free
    for base in two_servers:
        view = httpx2.get(f"{base}/v1/budget", headers={"Authorization": f"Bearer {token}"}).json()
        (levels,) = [b["levels"] for b in view["budgets"] if b["dataset"] == "social_insurance"]
        assert levels["grant"]["spent"]["epsilon"] == "0.3"
        assert levels["grant"]["reserved"]["epsilon"] == "0"
        assert levels["dataset_version"]["spent"]["epsilon"] == "0.3"
