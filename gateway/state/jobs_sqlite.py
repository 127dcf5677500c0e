"""Jobs in one SQLite file (`state/jobs/jobs.sqlite3`), for the processes of one machine.

A change is one BEGIN IMMEDIATE transaction (`sqlite_connections.immediate`): it holds the file's
write lock from its first read, so two workers never take the same job.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.state import migrations, sqlite_connections
from gateway.state.jobs import JobRules
from gateway.state.jobs_schema import STEPS, STORE
from gateway.state.migrations import Execute

__all__ = ["SqliteJobStore"]

_UNAVAILABLE = "the job store is unavailable"


class SqliteJobStore(JobRules):
    def __init__(self, path: Path) -> None:
        self._conn = sqlite_connections.open_wal(path)
        self._lock = threading.Lock()
        super().__init__(writing=self._writing, rows=self._read)
        try:
            with self._writing() as execute:
                migrations.migrate(execute, STORE, STEPS)
        except BaseException:
            self._conn.close()
            raise

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Execute]:
        with sqlite_connections.immediate(self._conn, self._lock, _UNAVAILABLE) as conn:
            yield conn.execute

    def _read(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with sqlite_connections.reading(self._conn, self._lock, _UNAVAILABLE) as conn:
            return conn.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._conn.close()
