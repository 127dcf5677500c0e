"""Objections in one SQLite file (`state/objections.sqlite3`), for the processes of one machine:
filed by one worker, answered through another. A move is one BEGIN IMMEDIATE transaction, so two
answers to one objection take turns and the second sees the first's step."""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

from gateway.errors import NotFound
from gateway.state import sqlite_connections
from gateway.state.objections import STEPS, STORE, ObjectionRules, apply_move, copy_file, row
from gateway.state.ports.objections import Status

__all__ = ["SqliteObjectionStore"]

log = logging.getLogger("veilgate.objections")
_UNAVAILABLE = "the objections cannot be read or written"
_MISSING = "objection: no objection of yours has this id"


class SqliteObjectionStore(ObjectionRules):
    def __init__(self, path: Path, *, import_from: Path | None = None) -> None:
        """`import_from`: an `objections.json` (the store before this one) copied in on first
        open; it is then renamed `objections.json.imported` and kept as a backup."""
        self._conn = sqlite_connections.open_wal(path)
        self._lock = threading.Lock()
        super().__init__(add=self._add_one)
        copy = (lambda execute: copy_file(execute, import_from)) if import_from is not None else None
        copied = sqlite_connections.migrate_and_import(self._conn, self._lock, _UNAVAILABLE, STORE, STEPS, copy=copy)
        if copied is not None and import_from is not None:
            sqlite_connections.keep_as_imported(import_from, copied, path, log, "objections")

    def _add_one(self, made: dict[str, Any]) -> None:
        with sqlite_connections.immediate(self._conn, self._lock, _UNAVAILABLE) as conn:
            conn.execute("INSERT INTO objections VALUES (?, ?, ?, ?)", row(made))

    def _records(self, sql: str, params: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        with sqlite_connections.reading(self._conn, self._lock, _UNAVAILABLE) as conn:
            return [json.loads(record) for (record,) in conn.execute(sql, params).fetchall()]

    def get(self, objection_id: str) -> dict[str, Any]:
        found = self._records("SELECT record FROM objections WHERE id = ?", (objection_id,))
        if not found:
            raise NotFound(_MISSING)
        return found[0]

    def list(self, consumer: str | None = None) -> list[dict[str, Any]]:
        if consumer is None:
            return self._records("SELECT record FROM objections ORDER BY filed_at, rowid")
        return self._records("SELECT record FROM objections WHERE consumer = ? ORDER BY filed_at, rowid", (consumer,))

    def move(self, objection_id: str, status: Status, *, reply: str, by: str) -> dict[str, Any]:
        with sqlite_connections.immediate(self._conn, self._lock, _UNAVAILABLE) as conn:
            rows = conn.execute("SELECT record FROM objections WHERE id = ?", (objection_id,)).fetchall()
            if not rows:
                raise NotFound(_MISSING)
            found: dict[str, Any] = json.loads(rows[0][0])
            apply_move(found, status, reply=reply, by=by)
            conn.execute("UPDATE objections SET record = ? WHERE id = ?", (json.dumps(found), objection_id))
        return found

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._conn.close()
