"""Emergency stops in PostgreSQL, for replicas on several machines.

A stop is a row; each change notifies every replica (NOTIFY), which reloads at once. A replica
whose listening connection is down reads the rows on every request instead, and refuses (503)
while it cannot read them: a stop it cannot see must not be ignored.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from gateway.domain.policy import Freeze, FreezeKind
from gateway.state import freezes, postgres_reader, postgres_watched, sqlite_connections
from gateway.state.migrations import Execute, Step
from gateway.state.ports.freezes import Freezes, LiftApproval, Unfrozen

__all__ = ["STEPS", "STORE", "PostgresFreezeStore"]

STORE = freezes.STORE
STEPS = (
    Step(
        1,
        (
            """CREATE TABLE IF NOT EXISTS freezes (
            kind TEXT NOT NULL, name TEXT NOT NULL, record TEXT NOT NULL, PRIMARY KEY (kind, name))""",
            """CREATE TABLE IF NOT EXISTS freeze_history (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, event TEXT NOT NULL)""",
        ),
    ),
    Step(2, ()),
)
"""1: the layout the store had before versioned migrations. 2: a stop's record may hold a lift
request (`lift`), which releases before it cannot read and would ignore (lifting alone): they
refuse a store this release opened."""
_CHANNEL = "veilgate_freezes"
_UNAVAILABLE = "the freezes cannot be read, so nothing is served until they can"


class PostgresFreezeStore:
    """Freezes in PostgreSQL, kept in memory by every replica and renewed on each NOTIFY."""

    def __init__(self, dsn: str, *, schema: str, listen: bool = True) -> None:
        """`listen=False`: no copy in memory, every `active()` reads the rows (a CLI command, say)."""
        self._db = postgres_reader.Reader.migrated(dsn, schema, store=STORE, steps=STEPS, unavailable=_UNAVAILABLE)
        self._watched = postgres_watched.Watched(dsn, schema, channel=_CHANNEL, load=self._load, listen=listen)

    def active(self) -> Freezes:
        return self._watched.get()

    def _load(self) -> Freezes:
        rows = self._db.rows("SELECT record FROM freezes")
        frozen = (Freeze.model_validate_json(record) for (record,) in rows)
        return {(f.kind, f.name): f for f in frozen}

    def history(self) -> list[dict[str, Any]]:
        return [json.loads(event) for (event,) in self._db.rows("SELECT event FROM freeze_history ORDER BY id")]

    def freeze(self, kind: FreezeKind, name: str, *, by: str, reason: str) -> Freeze:
        with self._db.transaction() as db:
            made = freezes.add(db.execute, kind, name, by=by, reason=reason)
            db.execute(f"NOTIFY {_CHANNEL}")  # a fixed name, not input; sent when the change commits
        self._watched.renew()
        return made

    def unfreeze(
        self, kind: FreezeKind, name: str, *, by: str, reason: str, approval: LiftApproval | None = None
    ) -> Unfrozen:
        with self._db.transaction() as db:
            lifted = freezes.remove(db.execute, kind, name, by=by, reason=reason, approval=approval)
            db.execute(f"NOTIFY {_CHANNEL}")  # a fixed name, not input
        self._watched.renew()
        return lifted

    def import_from(self, path: Path) -> int | None:
        """Copy an installation's stops and history here (its `freezes.sqlite3`, or the older
        `freezes.json`), if this store has neither (else None); returns the stops copied."""
        with self._db.transaction() as db:
            copy = freezes.copy_file if path.suffix == ".json" else _copy_database
            copied = copy(db.execute, path)
            db.execute(f"NOTIFY {_CHANNEL}")  # a fixed name, not input
        self._watched.renew()
        return copied

    def close(self) -> None:
        self._watched.close()
        self._db.close()


def _copy_database(execute: Execute, source: Path) -> int | None:
    """Copy the rows of an installation's SQLite freezes file into empty tables, history in order."""
    if not source.is_file() or execute("SELECT 1 FROM freezes UNION ALL SELECT 1 FROM freeze_history").fetchall():
        return None
    with contextlib.closing(sqlite_connections.open_read_only(source)) as local:
        stops = local.execute("SELECT kind, name, record FROM freezes").fetchall()
        history = local.execute("SELECT event FROM freeze_history ORDER BY id").fetchall()
    for row in stops:
        execute("INSERT INTO freezes VALUES (?, ?, ?)", row)
    for row in history:
        execute("INSERT INTO freeze_history (event) VALUES (?)", row)
    return len(stops)
