"""Ended console sessions in one SQLite file (`state/sessions.sqlite3`), for the processes of
one machine: a logout in one process is seen by the next request in every other (each check
reads the file; WAL lets it read while another process writes)."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from pathlib import Path

from gateway.state import migrations, sqlite_connections
from gateway.state.migrations import Step

__all__ = ["END", "HAS_ENDED", "PRUNE", "STEPS", "STORE", "SqliteSessionStore"]

STORE = "sessions"
STEPS = (Step(1, ("CREATE TABLE IF NOT EXISTS ended_sessions (id TEXT PRIMARY KEY, expires_at BIGINT NOT NULL)",)),)
"""1: an ended session's id and when its record may go (the token's `exp` and the leeway)."""
PRUNE = "DELETE FROM ended_sessions WHERE expires_at < ?"
END = "INSERT INTO ended_sessions VALUES (?, ?) ON CONFLICT (id) DO NOTHING"
HAS_ENDED = "SELECT 1 FROM ended_sessions WHERE id = ?"
_UNAVAILABLE = "the ended console sessions cannot be read or written"


class SqliteSessionStore:
    def __init__(self, path: Path) -> None:
        self._conn = sqlite_connections.open_wal(path)
        self._lock = threading.Lock()
        try:
            with sqlite_connections.immediate(self._conn, self._lock, _UNAVAILABLE) as conn:
                migrations.migrate(conn.execute, STORE, STEPS)
        except BaseException:
            self._conn.close()
            raise

    def end(self, session_id: str, *, until: int) -> None:
        with sqlite_connections.immediate(self._conn, self._lock, _UNAVAILABLE) as conn:
            conn.execute(PRUNE, (int(time.time()),))
            conn.execute(END, (session_id, until))

    def has_ended(self, session_id: str) -> bool:
        with sqlite_connections.reading(self._conn, self._lock, _UNAVAILABLE) as conn:
            return conn.execute(HAS_ENDED, (session_id,)).fetchone() is not None

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._conn.close()
