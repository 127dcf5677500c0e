"""The budget ledger in PostgreSQL, for replicas on several machines: a reservation locks its
balance rows FOR UPDATE, in name order, inside one transaction, so two never deadlock and no
account is overspent across replicas."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from gateway.state import migrations, postgres_connections
from gateway.state.budget import STEPS, STORE, TABLES, BudgetRules
from gateway.state.budget_base import Cursor

__all__ = ["PostgresBudgetLedger"]

_UNAVAILABLE = "the budget ledger is unavailable; nothing was released"


class PostgresBudgetLedger(BudgetRules):
    select_balance = BudgetRules.select_balance + " FOR UPDATE"
    select_reservation = BudgetRules.select_reservation + " FOR UPDATE"

    def __init__(self, dsn: str, *, schema: str = "public") -> None:
        # Pooled: a connection cut by a restart or a failover is replaced before it is used.
        self._pool = postgres_connections.Pool(dsn, schema, name="veilgate-budget", unavailable=_UNAVAILABLE)
        super().__init__(transaction=self._writing)
        try:
            with self._writing() as db:
                db.execute(migrations.POSTGRES_LOCK)
                migrations.migrate(db.execute, STORE, STEPS)
        except BaseException:
            self._pool.close()
            raise

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Cursor]:
        with self._pool.transaction() as conn:
            yield postgres_connections.Db(conn)

    def import_from(self, source: Path) -> int | None:
        """Copy an installation's SQLite budget ledger here, if this one is empty (else None)."""
        with self._pool.transaction() as conn:
            db = postgres_connections.Db(conn)
            return (
                postgres_connections.copy_tables(db, source, TABLES)
                if postgres_connections.is_empty(db, TABLES)
                else None
            )

    def close(self) -> None:
        self._pool.close()
