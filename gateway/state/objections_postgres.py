"""Objections in PostgreSQL, for replicas on several machines: filed on any replica, answered
on any other; a move holds its objection's row (`SELECT ... FOR UPDATE`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gateway.errors import NotFound
from gateway.state import migrations, postgres_connections, postgres_reader
from gateway.state.migrations import Step
from gateway.state.objections import ObjectionRules, apply_move
from gateway.state.objections_file import FileObjectionStore
from gateway.state.ports.objections import Status

__all__ = ["STEPS", "STORE", "PostgresObjectionStore"]

STORE = "objections"
STEPS = (
    Step(
        1,
        (
            """CREATE TABLE IF NOT EXISTS objections (
            id TEXT PRIMARY KEY, consumer TEXT NOT NULL, filed_at TEXT NOT NULL, record TEXT NOT NULL)""",
        ),
    ),
)
"""1: the layout the store had before versioned migrations."""
_UNAVAILABLE = "the objections cannot be read or written"


def _row(objection: dict[str, Any]) -> tuple[str, str, str, str]:
    return objection["id"], objection["consumer"], objection["filed_at"], json.dumps(objection)


class PostgresObjectionStore(ObjectionRules):
    def __init__(self, dsn: str, *, schema: str) -> None:
        self._db = postgres_reader.Reader.shared(dsn, schema, unavailable=_UNAVAILABLE)
        super().__init__(add=self._add_one)
        try:
            with self._db.transaction() as db:
                db.execute(migrations.POSTGRES_LOCK)
                migrations.migrate(db.execute, STORE, STEPS)
        except BaseException:
            self._db.close()
            raise

    def _add_one(self, made: dict[str, Any]) -> None:
        self._db.write("INSERT INTO objections VALUES (?, ?, ?, ?)", _row(made))

    def import_from(self, path: Path) -> int | None:
        """Copy an installation's objections file here, if this store is empty (else None)."""
        found = FileObjectionStore(path).list()
        with self._db.transaction() as db:
            if not postgres_connections.is_empty(db, (("objections", ()),)):
                return None
            db.executemany("INSERT INTO objections VALUES (?, ?, ?, ?)", [_row(o) for o in found])
        return len(found)

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
