"""The budget ledger on both backends: SQLite always, PostgreSQL when VEILGATE_TEST_PG_DSN is set."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.state.budget_postgres import PostgresBudgetLedger
from gateway.state.budget_sqlite import SqliteBudgetLedger
from gateway.state.ports import BudgetStore
from tests.conftest import ON_POSTGRES, store_handles

Opener = Callable[[], BudgetStore]


@pytest.fixture(params=["sqlite", ON_POSTGRES])
def open_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """A factory: every call opens another handle (another 'process') on the same ledger."""

    def on_sqlite() -> BudgetStore:
        return SqliteBudgetLedger(tmp_path / "budget.sqlite3")

    with store_handles(
        request.param, on_sqlite, lambda dsn, schema: PostgresBudgetLedger(dsn, schema=schema)
    ) as factory:
        yield factory
