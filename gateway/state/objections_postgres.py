"""Objections in PostgreSQL, for replicas on several machines: filed on any replica, answered
on any other; a move holds its objection's row (`SELECT ... FOR UPDATE`)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from gateway.errors import NotFound
from gateway.state import postgres_reader, sqlite_connections
from gateway.state.migrations import Execute
from gateway.state.objections import STEPS, STORE, ObjectionRules, apply_move, copy_file, row
from gateway.state.ports.objections import Status

__all__ = ["STEPS", "STORE", "PostgresObjectionStore"]

_UNAVAILABLE = "the objections cannot be read or written"


class PostgresObjectionStore(ObjectionRules):
    def __init__(self, dsn: str, *, schema: str) -> None:
        self._db = postgres_reader.Reader.migrated(dsn, schema, store=STORE, steps=STEPS, unavailable=_UNAVAILABLE)
        super().__init__(add=self._add_one)

    def _add_one(self, made: dict[str, Any]) -> None:
        self._db.write("INSERT INTO objections VALUES (?, ?, ?, ?)", row(made))

    def import_from(self, path: Path) -> int | None:
        """Copy an installation's objections here (its `objections.sqlite3`, or the older
        `objections.json`), if this store is empty (else None)."""
        with self._db.transaction() as db:
            return copy_file(db.execute, path) if path.suffix == ".json" else _copy_database(db.execute, path)

    def get(self, objection_id: str) -> dict[str, Any]:
        rows = self._db.rows("SELECT record FROM objections WHERE id = ?", (objection_id,))
        if not rows:
            raise NotFound("objection: no objection of yours has this id")
        found: dict[str, Any] = json.loads(rows[0][0])
        return found

    def list(self, consumer: str | None = None) -> list[dict[str, Any]]:
        if consumer is None:
            rows = self._db.rows("SELECT record FROM objections ORDER BY filed_at, id")
        else:
            rows = self._db.rows("SELECT record FROM objections WHERE consumer = ? ORDER BY filed_at, id", (consumer,))
        return [json.loads(record) for (record,) in rows]

    def move(self, objection_id: str, status: Status, *, reply: str, by: str) -> dict[str, Any]:
        with self._db.transaction() as db:
            rows = db.execute("SELECT record FROM objections WHERE id = ? FOR UPDATE", (objection_id,)).fetchall()
            if not rows:
                raise NotFound("objection: no objection of yours has this id")
            found: dict[str, Any] = json.loads(rows[0][0])
            apply_move(found, status, reply=reply, by=by)
            db.execute("UPDATE objections SET record = ? WHERE id = ?", (json.dumps(found), objection_id))
        return found

    def close(self) -> None:
        self._db.close()


def _copy_database(execute: Execute, source: Path) -> int | None:
    """Copy the rows of an installation's SQLite objections file into an empty table."""
    if not source.is_file() or execute("SELECT 1 FROM objections LIMIT 1").fetchall():
        return None
    with contextlib.closing(sqlite_connections.open_read_only(source)) as local:
        rows = local.execute("SELECT id, consumer, filed_at, record FROM objections").fetchall()
    for found in rows:
        execute("INSERT INTO objections VALUES (?, ?, ?, ?)", found)
    return len(rows)
