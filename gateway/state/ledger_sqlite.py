"""The ledger in one SQLite file in WAL mode (`state/ledger/ledger.sqlite3`), shared by the
gateway processes of one machine; BEGIN IMMEDIATE orders them."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.state import sqlite_connections
from gateway.state.group_commit import written
from gateway.state.group_commit_loop import sqlite_committers
from gateway.state.ledger import BATCH_LIMIT, LedgerRules, fail_batch
from gateway.state.ledger_admission import Admit
from gateway.state.ledger_tables import SQLITE_STEPS, STORE
from gateway.state.ports import Admission, VerificationRequest

DB_FILE = "ledger.sqlite3"


class SqliteLedger(LedgerRules):
    """One SQLite file in WAL mode: the processes of one machine share it, BEGIN IMMEDIATE
    orders them. The request path writes from the event loop, with only the COMMIT in a thread
    (`group_commit_loop.LoopCommitter`)."""

    _join = "CROSS JOIN"

    def __init__(self, path: Path, *, busy_timeout_seconds: float = 30.0) -> None:
        self._path = path
        self._timeout = busy_timeout_seconds
        self._local = threading.local()
        writer, self._loop_writer = sqlite_committers(
            "ledger",
            lambda wait: self._connect(wait=wait),
            self._apply,
            limit=BATCH_LIMIT,
            fail=fail_batch,
            busy_timeout_seconds=busy_timeout_seconds,
        )
        super().__init__(writer, self._read_rows)

    @classmethod
    def open(cls, directory: Path, *, busy_timeout_seconds: float = 30.0) -> SqliteLedger:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / DB_FILE
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        ledger = cls(path, busy_timeout_seconds=busy_timeout_seconds)
        try:
            conn = ledger._conn()
            conn.execute("PRAGMA journal_mode = WAL")
            sqlite_connections.migrate(conn, STORE, SQLITE_STEPS)
        except BaseException:
            ledger.close()
            raise
        return ledger

    @property
    def path(self) -> Path:
        return self._path

    def _connect(self, *, wait: bool = True) -> sqlite3.Connection:
        """`wait=False`: for the event loop, which must never sleep on the lock (LoopCommitter)."""
        timeout = self._timeout if wait else 0.0
        return sqlite_connections.connect(self._path, busy_timeout_seconds=timeout, same_thread=wait)

    def _conn(self) -> sqlite3.Connection:
        """A reading connection per thread: sqlite3 connections are not shared across threads."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def _read_rows(self, sql: str, params: Sequence[Any] = (), /) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self._conn().execute(sql, params).fetchall()
        return rows

    async def admit_verification_async(self, request: VerificationRequest, *, now: float) -> Admission:
        """Applied on the loop, committed by a thread (LoopCommitter)."""
        admission: Admission = await written(Admit(request, now), self._loop_writer, self._writer)
        return admission

    def close(self) -> None:
        self._loop_writer.close()
        super().close()
