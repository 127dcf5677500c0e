"""The budget ledger in one SQLite file (`state/ledger/budget.sqlite3`), for the processes of
one machine: WAL mode, and BEGIN IMMEDIATE orders every change of every process."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from gateway.state import migrations, sqlite_connections
from gateway.state.budget import STEPS, STORE, BudgetRules
from gateway.state.budget_base import Cursor

__all__ = ["SqliteBudgetLedger"]

_UNAVAILABLE = "the budget ledger is unavailable; nothing was released"


class SqliteBudgetLedger(BudgetRules):
    def __init__(self, path: Path) -> None:
        self._conn = sqlite_connections.open_wal(path)
        self._lock = threading.Lock()
        super().__init__(transaction=self._writing, read=self._reading)
        try:
            with self._writing() as cur:
                migrations.migrate(cur.execute, STORE, STEPS)
        except BaseException:
            self._conn.close()
            raise

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Cursor]:
        with sqlite_connections.immediate(self._conn, self._lock, _UNAVAILABLE) as conn:
            yield conn

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Cursor]:
        """Without BEGIN IMMEDIATE: a lookup on the request path never waits for another
        process's write lock (each SELECT sees one committed state)."""
        with sqlite_connections.reading(self._conn, self._lock, _UNAVAILABLE) as conn:
            yield conn

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._conn.close()
