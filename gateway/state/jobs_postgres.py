"""Jobs in PostgreSQL, seen by every replica.

A change is one transaction on the process's shared reader (`postgres_reader.Reader.shared`) that
holds its job's row (`SELECT ... FOR UPDATE`), so replicas reviewing or claiming one job take
turns; jobs of other ids do not wait for each other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from gateway.state import postgres_connections, postgres_reader
from gateway.state.jobs import JobRules
from gateway.state.jobs_schema import COLUMNS, SELECT_ONE, STEPS, STORE
from gateway.state.migrations import Execute

__all__ = ["PostgresJobStore"]

_UNAVAILABLE = "the job store is unavailable"
_TABLES: postgres_connections.Tables = (("jobs", (*(c.strip() for c in COLUMNS.split(",")), "runner")),)
"""What an installation's job store holds, for `import_from`."""


class PostgresJobStore(JobRules):
    def __init__(self, dsn: str, *, schema: str) -> None:
        self._db = postgres_reader.Reader.migrated(dsn, schema, store=STORE, steps=STEPS, unavailable=_UNAVAILABLE)
        super().__init__(writing=self._writing, rows=self._db.rows, select_for_update=SELECT_ONE + " FOR UPDATE")

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Execute]:
        with self._db.transaction() as db:
            yield db.execute

    def import_from(self, source: Path) -> int | None:
        """Copy an installation's SQLite job store here, if this one is empty (else None)."""
        with self._db.transaction() as db:
            return (
                postgres_connections.copy_tables(db, source, _TABLES)
                if postgres_connections.is_empty(db, _TABLES)
                else None
            )

    def close(self) -> None:
        self._db.close()
