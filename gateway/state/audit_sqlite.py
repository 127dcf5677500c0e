"""The audit log in one SQLite file in WAL mode (`state/audit/log.sqlite3`), shared by the
processes of one machine; BEGIN IMMEDIATE orders them."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.domain.trail import AuditEvent
from gateway.errors import AuditUnavailable
from gateway.state import sqlite_connections
from gateway.state.audit import BATCH_LIMIT, AuditLogRules, fail_batch
from gateway.state.group_commit import written
from gateway.state.group_commit_loop import sqlite_committers
from gateway.state.migrations import Step

DB_FILE = "log.sqlite3"
STORE = "audit"
_SQLITE_FIRST = """
CREATE TABLE IF NOT EXISTS leaves (
    seq INTEGER PRIMARY KEY,
    record TEXT NOT NULL,
    hash BLOB NOT NULL,
    time TEXT GENERATED ALWAYS AS (json_extract(record, '$.time')) VIRTUAL,
    principal TEXT GENERATED ALWAYS AS (json_extract(record, '$.principal')) VIRTUAL,
    service TEXT GENERATED ALWAYS AS (json_extract(record, '$.service')) VIRTUAL,
    dataset TEXT GENERATED ALWAYS AS (json_extract(record, '$.dataset')) VIRTUAL,
    decision TEXT GENERATED ALWAYS AS (json_extract(record, '$.decision')) VIRTUAL
);
CREATE INDEX IF NOT EXISTS leaves_time ON leaves(time);
CREATE INDEX IF NOT EXISTS leaves_principal ON leaves(principal, seq);
CREATE INDEX IF NOT EXISTS leaves_service ON leaves(service, seq);
CREATE INDEX IF NOT EXISTS leaves_dataset ON leaves(dataset, seq);
CREATE TABLE IF NOT EXISTS checkpoints (
    size INTEGER PRIMARY KEY,
    root TEXT NOT NULL,
    time TEXT NOT NULL,
    jws TEXT NOT NULL
);
"""
SQLITE_STEPS = (Step(1, tuple(sql.strip() for sql in _SQLITE_FIRST.split(";") if sql.strip())),)
"""The log's versioned steps (`migrations`). Step 1 is the layout of before versioning, as
`CREATE ... IF NOT EXISTS`: a log made then is at version 0, and the step changes nothing it holds."""


def _connect(path: Path, busy_timeout_seconds: float = 30.0) -> sqlite3.Connection:
    return sqlite_connections.connect(path, busy_timeout_seconds=busy_timeout_seconds)


class SqliteAuditLog(AuditLogRules):
    """One SQLite file in WAL mode, shared by the processes of one machine (BEGIN IMMEDIATE
    orders them). The request path writes from the event loop, with only the COMMIT in a thread
    (`group_commit_loop.LoopCommitter`)."""

    def __init__(self, directory: Path, *, busy_timeout_seconds: float = 30.0) -> None:
        self._path = directory / DB_FILE
        self._read = _connect(self._path)
        self._read_lock = threading.Lock()
        writer, self._loop_writer = sqlite_committers(
            "audit",
            lambda wait: _connect(self._path, busy_timeout_seconds if wait else 0.0),
            self._apply,
            limit=BATCH_LIMIT,
            fail=fail_batch,
            busy_timeout_seconds=busy_timeout_seconds,
        )
        super().__init__(directory, writer, self._read_rows, self._write_outside)

    @classmethod
    def open(cls, directory: Path, *, busy_timeout_seconds: float = 30.0) -> SqliteAuditLog:
        """Open the log in `directory`, creating it (owner-only) on first use.

        `busy_timeout_seconds`: how long an append waits for another process's write lock
        before it fails (and its request with it).
        """
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        path = directory / DB_FILE
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        try:
            conn = _connect(path)
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                sqlite_connections.migrate(conn, STORE, SQLITE_STEPS)
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise AuditUnavailable(f"the audit log cannot be opened ({exc}); see docs/operations.md") from exc
        return cls(directory, busy_timeout_seconds=busy_timeout_seconds)

    @property
    def path(self) -> Path:
        return self._path

    def _read_rows(self, sql: str, params: Sequence[Any] = (), /) -> list[tuple[Any, ...]]:
        with self._read_lock:
            rows: list[tuple[Any, ...]] = self._read.execute(sql, params).fetchall()
            return rows

    def _write_outside(self, sql: str, params: Sequence[Any], /) -> int:
        with self._read_lock:
            return self._read.execute(sql, params).rowcount

    async def append_async(self, event: AuditEvent) -> int:
        """Written on the loop, committed by a thread (LoopCommitter)."""
        if self._closed:
            raise AuditUnavailable("the audit log is closed")
        seq: int = await written(event, self._loop_writer, self._writer)
        return seq

    def close(self) -> None:
        self._closed = True
        self._loop_writer.close()
        super().close()
        with self._read_lock:
            self._read.close()
