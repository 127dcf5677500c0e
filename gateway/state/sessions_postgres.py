"""Ended console sessions in PostgreSQL, for replicas on several machines: a logout on one
replica is refused on every other from the next request (each check reads the table; no copy
is kept in memory that a notice would have to update)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from gateway.state import postgres_reader, sqlite_connections
from gateway.state.sessions_sqlite import END, HAS_ENDED, PRUNE, STEPS, STORE

__all__ = ["PostgresSessionStore"]

_UNAVAILABLE = "the ended console sessions cannot be read or written"


class PostgresSessionStore:
    def __init__(self, dsn: str, *, schema: str) -> None:
        self._db = postgres_reader.Reader.migrated(dsn, schema, store=STORE, steps=STEPS, unavailable=_UNAVAILABLE)

    def end(self, session_id: str, *, until: int) -> None:
        with self._db.transaction() as db:
            db.execute(PRUNE, (int(time.time()),))
            db.execute(END, (session_id, until))

    def has_ended(self, session_id: str) -> bool:
        return bool(self._db.rows(HAS_ENDED, (session_id,)))

    def import_from(self, source: Path) -> int | None:
        """Copy the ended sessions of an installation's `sessions.sqlite3` whose tokens have not
        expired, so that a logout before the move stays one after it; returns how many were new
        here (adding is idempotent: run twice, nothing is copied twice)."""
        if not source.is_file():
            return None
        with contextlib.closing(sqlite_connections.open_read_only(source)) as local:
            ended = local.execute(
                "SELECT id, expires_at FROM ended_sessions WHERE expires_at >= ?", (int(time.time()),)
            ).fetchall()
        copied = 0
        with self._db.transaction() as db:
            for row in ended:
                copied += db.execute(END, row).rowcount
        return copied

    def close(self) -> None:
        self._db.close()
