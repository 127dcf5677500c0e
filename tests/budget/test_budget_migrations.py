"""A budget ledger written before versioned migrations (its tables made by the DDL of then:
no spending by day, no per-payer holds, the per-question holds of old) opens on both backends
with its balances, reservations and releases intact, and the step recorded once."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from gateway.domain.budget import Amount, accounts
from gateway.errors import BudgetExhausted
from gateway.state import migrations
from gateway.state.budget_postgres import PostgresBudgetLedger
from gateway.state.budget_sqlite import SqliteBudgetLedger
from gateway.state.ports import BudgetStore
from tests.conftest import ON_POSTGRES, PG_DSN, pg_old_schema

OLD_DDL = (
    """CREATE TABLE budget_reservations (
        id TEXT PRIMARY KEY, state TEXT NOT NULL, micro_epsilon BIGINT NOT NULL, nano_delta BIGINT NOT NULL,
        created TEXT NOT NULL)""",
    """CREATE TABLE budget_postings (
        reservation_id TEXT NOT NULL, account TEXT NOT NULL, PRIMARY KEY (reservation_id, account))""",
    """CREATE TABLE budget_balances (
        account TEXT PRIMARY KEY, reserved_e BIGINT NOT NULL, reserved_d BIGINT NOT NULL,
        spent_e BIGINT NOT NULL, spent_d BIGINT NOT NULL)""",
    "CREATE TABLE aggregate_releases (query_key TEXT PRIMARY KEY, result TEXT NOT NULL, created TEXT NOT NULL)",
    """CREATE TABLE idempotency_keys (
        consumer TEXT NOT NULL, idempotency_key TEXT NOT NULL, request_digest TEXT NOT NULL,
        state TEXT NOT NULL, body TEXT, created TEXT NOT NULL, PRIMARY KEY (consumer, idempotency_key))""",
    "CREATE TABLE release_holds (query_key TEXT PRIMARY KEY, holder TEXT NOT NULL, created TEXT NOT NULL)",
)
ACCOUNTS = accounts(
    grant="g1", consumer="c1", organisation="org", dataset="d", version="v1",
    grant_cap=Amount(1_000_000, 0), organisation_cap=Amount(10**9, 0), dataset_version_cap=Amount(10**9, 0),
)  # fmt: skip
NAMES = [name for name, _cap in ACCOUNTS.pairs()]
Execute = Callable[[str, Sequence[Any]], Any]


def _fill(execute: Execute) -> None:
    """One committed release of 0.4 and one reservation of 0.3 still held, on the three accounts."""
    for statement in OLD_DDL:
        execute(statement, ())
    for rid, state, eps in (("r-done", "committed", 400_000), ("r-held", "reserved", 300_000)):
        execute("INSERT INTO budget_reservations VALUES (?, ?, ?, 0, '2026-01-01T00:00:00+00:00')", (rid, state, eps))
        for name in NAMES:
            execute("INSERT INTO budget_postings VALUES (?, ?)", (rid, name))
    for name in NAMES:
        execute("INSERT INTO budget_balances VALUES (?, 300000, 0, 400000, 0)", (name,))
    execute("INSERT INTO aggregate_releases VALUES ('q1', '{\"v\": 1}', '2026-01-01T00:00:00+00:00')", ())
    execute("INSERT INTO release_holds VALUES ('q1', 'a request of before', '2026-01-01T00:00:00+00:00')", ())


@contextlib.contextmanager
def _old_ledger(backend: str, tmp_path: Path) -> Iterator[tuple[Callable[[], BudgetStore], Execute]]:
    if backend == "sqlite":
        path = tmp_path / "budget.sqlite3"
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as raw:
            _fill(raw.execute)
            yield (lambda: SqliteBudgetLedger(path)), raw.execute
        return

    assert PG_DSN is not None
    with pg_old_schema() as (schema, db):
        _fill(db.execute)
        yield (lambda: PostgresBudgetLedger(PG_DSN or "", schema=schema)), db.execute


def _tables(raw: Execute, backend: str) -> set[str]:
    sql = (
        "SELECT name FROM sqlite_master WHERE type = 'table'"
        if backend == "sqlite"
        else "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
    )
    return {str(name) for (name,) in raw(sql, ()).fetchall()}


@pytest.mark.parametrize("backend", ["sqlite", ON_POSTGRES])
def test_a_budget_ledger_of_before_is_migrated_with_its_balances_intact(backend: str, tmp_path: Path) -> None:
    with _old_ledger(backend, tmp_path) as (open_ledger, raw):
        ledger = open_ledger()
        try:
            for name in NAMES:
                balance = ledger.balance(name)
                assert (balance.spent, balance.reserved) == (Amount(400_000, 0), Amount(300_000, 0))
            assert ledger.has_history() and ledger.stored_release("q1") == '{"v": 1}'
            assert [s.id for s in ledger.stale("2027-01-01")] == ["r-held"]
            # The held reservation of before is still counted: 0.4 + 0.3 spent or held of a cap of 1.
            with pytest.raises(BudgetExhausted, match="exceed"):
                ledger.reserve(ACCOUNTS, Amount(300_001, 0))
            ledger.commit("r-held")  # unlabelled, as every reservation of before: spent, no day row
            assert ledger.balance(NAMES[0]).spent == Amount(700_000, 0)
            holding = ledger.hold_releases([("q1", "c1")], "now", expired_before="2026-01-01")
            assert holding.busy == () and holding.stored == {"q1": '{"v": 1}'}
        finally:
            ledger.close()
        tables = _tables(raw, backend)
        assert "release_holds" not in tables
        assert {"payer_holds", "release_payers", "budget_labels", "budget_spending"} <= tables
        assert migrations.applied(raw, "budget") == [1]
        again = open_ledger()
        try:
            assert again.balance(NAMES[0]).spent == Amount(700_000, 0)
            assert raw("SELECT count(*) FROM schema_versions WHERE store = ?", ("budget",)).fetchone()[0] == 1
        finally:
            again.close()
