"""Emergency stops in one SQLite file (`state/freezes.sqlite3`), for the processes of one machine.

A change is one BEGIN IMMEDIATE transaction, so two processes, or `veilgate freeze` while the API
is down, never lose each other's change. `active()` answers from memory, re-read when `PRAGMA
data_version` says another connection committed; that is asked at most once per recheck interval
(`state_recheck_seconds`), and a change made through this store is seen at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

from gateway.domain.policy import Freeze, FreezeKind
from gateway.state import freezes, sqlite_connections
from gateway.state.migrations import Step
from gateway.state.ports.freezes import Freezes, LiftApproval, Unfrozen

__all__ = ["STEPS", "SqliteFreezeStore", "installation_stops"]

log = logging.getLogger("veilgate.freezes")
STEPS = (
    Step(
        1,
        (
            """CREATE TABLE IF NOT EXISTS freezes (
            kind TEXT NOT NULL, name TEXT NOT NULL, record TEXT NOT NULL, PRIMARY KEY (kind, name))""",
            """CREATE TABLE IF NOT EXISTS freeze_history (
            id INTEGER PRIMARY KEY AUTOINCREMENT, event TEXT NOT NULL)""",
        ),
    ),
    Step(2, ()),
)
"""1: the stops and their history, as PostgreSQL has them. 2: a stop's record may hold a lift
request (`lift`), which releases before it cannot read and would ignore (lifting alone): they
refuse a store this release opened."""
_UNAVAILABLE = "the freezes cannot be read, so nothing is served until they can"


class SqliteFreezeStore:
    def __init__(self, path: Path, *, import_from: Path | None = None, recheck_seconds: float = 0.0) -> None:
        """`import_from`: a `freezes.json` (the store before this one) whose stops and history are
        copied in on first open; it is then renamed `freezes.json.imported` and kept as a backup.
        `recheck_seconds`: how long `active` may answer from memory before it looks for another
        process's commit (0: on every call)."""
        self._conn = sqlite_connections.open_wal(path)
        self._lock = threading.Lock()
        self._snapshot: sqlite_connections.Snapshot[Freezes] = sqlite_connections.Snapshot(recheck_seconds)
        copy = (lambda execute: freezes.copy_file(execute, import_from)) if import_from is not None else None
        copied = sqlite_connections.migrate_and_import(
            self._conn, self._lock, _UNAVAILABLE, freezes.STORE, STEPS, copy=copy
        )
        if copied is not None and import_from is not None:
            sqlite_connections.keep_as_imported(import_from, copied, path, log, "freezes")

    def active(self) -> Freezes:
        """What is frozen now; one `PRAGMA data_version` per recheck interval when nothing changed."""
        return self._snapshot.read(self._conn, self._lock, _UNAVAILABLE, _read_freezes)

    def history(self) -> list[dict[str, Any]]:
        with sqlite_connections.reading(self._conn, self._lock, _UNAVAILABLE) as conn:
            return [json.loads(event) for (event,) in conn.execute("SELECT event FROM freeze_history ORDER BY id")]

    def freeze(self, kind: FreezeKind, name: str, *, by: str, reason: str) -> Freeze:
        try:
            with sqlite_connections.immediate(self._conn, self._lock, _UNAVAILABLE) as conn:
                return freezes.add(conn.execute, kind, name, by=by, reason=reason)
        finally:
            self._snapshot.forget()  # data_version does not count this connection's own commits

    def unfreeze(
        self, kind: FreezeKind, name: str, *, by: str, reason: str, approval: LiftApproval | None = None
    ) -> Unfrozen:
        try:
            with sqlite_connections.immediate(self._conn, self._lock, _UNAVAILABLE) as conn:
                return freezes.remove(conn.execute, kind, name, by=by, reason=reason, approval=approval)
        finally:
            self._snapshot.forget()

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._conn.close()


def installation_stops(database: Path, legacy: Path) -> Freezes:
    """The stops an installation on one machine holds, read without changing anything: those of
    its SQLite file, or of its `freezes.json` if that was never imported."""
    if database.is_file():
        with contextlib.closing(sqlite_connections.open_read_only(database)) as conn:
            try:
                rows = conn.execute("SELECT record FROM freezes").fetchall()
            except sqlite3.OperationalError:  # made, but its tables not yet
                rows = []
        return {(f.kind, f.name): f for f in (Freeze.model_validate_json(text) for (text,) in rows)}
    return freezes.read_file(legacy)[0] if legacy.is_file() else {}


def _read_freezes(conn: sqlite3.Connection) -> Freezes:
    rows = conn.execute("SELECT record FROM freezes").fetchall()
    return {(f.kind, f.name): f for f in (Freeze.model_validate_json(text) for (text,) in rows)}
