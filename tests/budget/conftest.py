"""The budget ledger on both backends: SQLite always, PostgreSQL when VEILGATE_TEST_PG_DSN is set."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.budget_ledger import BudgetLedger, PostgresBudgetLedger, SqliteBudgetLedger

PG_DSN = os.environ.get("VEILGATE_TEST_PG_DSN")
needs_pg = pytest.mark.skipif(PG_DSN is None, reason="set VEILGATE_TEST_PG_DSN to run against PostgreSQL")

Opener = Callable[[], BudgetLedger]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, needs_pg])])
def open_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """A factory: every call opens another handle (another 'process') on the same ledger."""
    opened: list[BudgetLedger] = []
    schema = f"vg_test_{secrets.token_hex(6)}"

    def factory() -> BudgetLedger:
        ledger: BudgetLedger
        if request.param == "sqlite":
            ledger = SqliteBudgetLedger(tmp_path / "budget.sqlite3")
        else:
            assert PG_DSN is not None
            ledger = PostgresBudgetLedger(PG_DSN, schema=schema)
        opened.append(ledger)
        return ledger

    yield factory
    for ledger in opened:
        ledger.close()
    if request.param == "postgres" and PG_DSN is not None:
        import psycopg

        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("DROP SCHEMA {} CASCADE").format(psycopg.sql.Identifier(schema)))
