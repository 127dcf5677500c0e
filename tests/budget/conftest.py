"""The budget ledger on both backends: SQLite always, PostgreSQL when VEILGATE_TEST_PG_DSN is set."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.budget_ledger import BudgetLedger, PostgresBudgetLedger, SqliteBudgetLedger
from tests.conftest import ON_POSTGRES, PG_DSN, pg_schema

Opener = Callable[[], BudgetLedger]


@pytest.fixture(params=["sqlite", ON_POSTGRES])
def open_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """A factory: every call opens another handle (another 'process') on the same ledger."""
    opened: list[BudgetLedger] = []
    with contextlib.ExitStack() as stack:
        schema = stack.enter_context(pg_schema()) if request.param == "postgres" else ""

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
