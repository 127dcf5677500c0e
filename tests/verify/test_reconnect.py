"""PostgreSQL went away and came back: every store serves the next request, and the listener
still delivers a freeze whose notice was lost.

A restart is simulated by `pg_terminate_backend` on the gateway's connections (what a restart
or a failover does to them).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from gateway.domain.budget import Amount
from gateway.domain.policy import FreezeKind
from gateway.state import group_commit, postgres_watched
from gateway.state.budget_postgres import PostgresBudgetLedger
from gateway.state.freezes_postgres import PostgresFreezeStore
from tests.budget.test_budget import _accounts
from tests.conftest import PG_DSN, eventually, needs_pg, pg_schema
from tests.verify.test_ledger import NOON, claim, open_at, request

pytestmark = [pytest.mark.postgres, needs_pg]


def _terminate(application_name: str) -> int:
    import psycopg

    assert PG_DSN is not None
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (application_name,)
        ).fetchall()
    return len(rows)


@pytest.fixture
def schema() -> Iterator[str]:
    with pg_schema() as name:
        yield name


def test_the_budget_ledger_serves_the_next_request_after_a_restart(schema: str) -> None:
    assert PG_DSN is not None
    ledger = PostgresBudgetLedger(PG_DSN, schema=schema)
    try:
        acc = _accounts(Amount(1_000_000))
        ledger.commit(ledger.reserve(acc, Amount(100_000)))
        assert _terminate("veilgate-budget") >= 1
        ledger.commit(ledger.reserve(acc, Amount(100_000)))  # a checked connection from the pool
        assert ledger.balance(acc.grant).spent.micro_epsilon == 200_000
    finally:
        ledger.close()


def test_the_verification_ledger_serves_the_next_request_after_a_restart(
    schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(group_commit, "CHECK_AFTER_IDLE_SECONDS", 0.0)  # "idle" at once: no waiting in a test
    ledger = open_at(("postgres", schema))
    try:
        ledger.admit_verification(request(claim("a"), quota=5), now=NOON)
        assert _terminate("veilgate-ledger") >= 1
        ledger.admit_verification(request(claim("b"), quota=5), now=NOON)
        assert ledger.usage("g1")[0][4] == 2
    finally:
        ledger.close()


def test_a_store_read_through_the_shared_connection_recovers(schema: str) -> None:
    assert PG_DSN is not None
    store = PostgresFreezeStore(PG_DSN, schema=schema, listen=False)
    try:
        store.freeze(FreezeKind.DATASET, "enterprise_registry", by="demo-admin", reason="checking")
        assert _terminate("veilgate-reader") >= 1
        assert (FreezeKind.DATASET, "enterprise_registry") in store.active()
    finally:
        store.close()


def test_a_listener_that_hears_nothing_still_delivers_a_freeze(schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A half-open connection raises nothing and delivers nothing: notices are dropped here,
    and the heartbeat's reading must bring the freeze all the same."""
    assert PG_DSN is not None
    monkeypatch.setattr(postgres_watched, "HEARTBEAT_SECONDS", 0.2)
    deaf: list[Any] = []

    def no_notices(self: Any, **_kwargs: Any) -> Iterator[Any]:
        deaf.append(self)
        return iter(())

    import psycopg

    monkeypatch.setattr(psycopg.Connection, "notifies", no_notices, raising=True)
    replica = PostgresFreezeStore(PG_DSN, schema=schema)
    other = PostgresFreezeStore(PG_DSN, schema=schema, listen=False)
    try:
        assert replica._watched.live  # listening, with a copy in memory
        assert replica.active() == {}
        other.freeze(FreezeKind.SERVICE, "enterprise-registration", by="demo-admin", reason="incident")
        eventually(lambda: (FreezeKind.SERVICE, "enterprise-registration") in replica.active())
        assert deaf and replica._watched.live  # it came through the heartbeat, not a read per use
    finally:
        other.close()
        replica.close()


def test_a_cut_listener_reconnects_and_delivers_a_freeze(schema: str) -> None:
    assert PG_DSN is not None
    replica = PostgresFreezeStore(PG_DSN, schema=schema)
    other = PostgresFreezeStore(PG_DSN, schema=schema, listen=False)
    try:
        assert _terminate("veilgate-listener") >= 1
        other.freeze(FreezeKind.CONSUMER, "demo-business", by="demo-admin", reason="incident")
        eventually(lambda: (FreezeKind.CONSUMER, "demo-business") in replica.active())
        eventually(lambda: replica._watched.live, seconds=10)  # listening again, on a new connection
    finally:
        other.close()
        replica.close()
