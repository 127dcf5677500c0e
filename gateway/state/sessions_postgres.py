"""Ended console sessions in PostgreSQL, for replicas on several machines: a logout on one
replica is refused on every other from the next request (each check reads the table; no copy
is kept in memory that a notice would have to update)."""

from __future__ import annotations

import time

from gateway.state import postgres_reader
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

    def close(self) -> None:
        self._db.close()
