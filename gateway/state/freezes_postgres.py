"""Emergency stops in PostgreSQL, for replicas on several machines.

A stop is a row; each change notifies every replica (NOTIFY), which reloads at once. A replica
whose listening connection is down reads the rows on every request instead, and refuses (503)
while it cannot read them: a stop it cannot see must not be ignored.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.domain.policy import Freeze, FreezeKind
from gateway.errors import Conflict, NotFound
from gateway.state import migrations, postgres_connections, postgres_reader, postgres_watched
from gateway.state.freezes_file import FileFreezeStore, unfrozen
from gateway.state.migrations import Step
from gateway.state.ports.freezes import Freezes

__all__ = ["STEPS", "STORE", "PostgresFreezeStore"]

STORE = "freezes"
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
)
"""1: the layout the store had before versioned migrations."""
_CHANNEL = "veilgate_freezes"
_UNAVAILABLE = "the freezes cannot be read, so nothing is served until they can"


class PostgresFreezeStore:
    """Freezes in PostgreSQL, kept in memory by every replica and renewed on each NOTIFY."""

    def __init__(self, dsn: str, *, schema: str, listen: bool = True) -> None:
        """`listen=False`: no copy in memory, every `active()` reads the rows (a CLI command, say)."""
        self._db = postgres_reader.Reader.shared(dsn, schema, unavailable=_UNAVAILABLE)
        try:
            with self._db.transaction() as db:
                db.execute(migrations.POSTGRES_LOCK)
                migrations.migrate(db.execute, STORE, STEPS)
        except BaseException:
            self._db.close()
            raise
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
        made = Freeze(kind=kind, name=name, since=datetime.now(UTC), by=by, reason=reason)
        with self._db.transaction() as db:
            inserted = db.execute(
                "INSERT INTO freezes VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                (kind.value, name, made.model_dump_json()),
            ).rowcount
            if inserted != 1:
                raise Conflict(f"name: this {kind.value} is already frozen")
            self._record(db, {"action": "freeze", **made.model_dump(mode="json")})
        self._watched.renew()
        return made

    def unfreeze(self, kind: FreezeKind, name: str, *, by: str, reason: str) -> Freeze:
        with self._db.transaction() as db:
            rows = db.execute(
                "DELETE FROM freezes WHERE kind = ? AND name = ? RETURNING record", (kind.value, name)
            ).fetchall()
            if not rows:
                raise NotFound(f"name: this {kind.value} is not frozen")
            self._record(db, unfrozen(kind, name, by=by, reason=reason))
        self._watched.renew()
        return Freeze.model_validate_json(rows[0][0])

    def import_from(self, path: Path) -> int | None:
        """Copy an installation's freezes file here (stops and history), if this store has
        neither (else None); returns the stops copied."""
        local = FileFreezeStore(path)
        tables = (("freezes", ()), ("freeze_history", ()))
        with self._db.transaction() as db:
            if not postgres_connections.is_empty(db, tables):
                return None
            stops = local.active().values()
            for stop in stops:
                db.execute("INSERT INTO freezes VALUES (?, ?, ?)", (stop.kind.value, stop.name, stop.model_dump_json()))
            for event in local.history():
                db.execute("INSERT INTO freeze_history (event) VALUES (?)", (json.dumps(event, ensure_ascii=False),))
            db.execute(f"NOTIFY {_CHANNEL}")  # a fixed name, not input
        self._watched.renew()
        return len(stops)

    @staticmethod
    def _record(db: postgres_connections.Db, event: dict[str, Any]) -> None:
        """The history row, and the notice every replica reloads on (sent when the change commits)."""
        db.execute("INSERT INTO freeze_history (event) VALUES (?)", (json.dumps(event, ensure_ascii=False),))
        db.execute(f"NOTIFY {_CHANNEL}")  # a fixed name, not input

    def close(self) -> None:
        self._watched.close()
        self._db.close()
