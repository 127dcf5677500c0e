"""SQLite files that several threads and processes write: how to open them and how to write.

Shared by the leaves that keep their state in one SQLite file of their own (the budget ledger,
the job store). WAL mode with `synchronous = FULL` makes a commit durable before it returns;
BEGIN IMMEDIATE takes the file's write lock at the start, so two processes never interleave
the reads and writes of one transaction.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.errors import DependencyError


def open_wal(path: Path) -> sqlite3.Connection:
    """One connection, shared by the threads of a process under the caller's lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


@contextmanager
def immediate(conn: sqlite3.Connection, lock: threading.Lock, unavailable: str) -> Iterator[sqlite3.Connection]:
    """A write transaction: committed if the block returns, rolled back if it raises.

    `unavailable` is the message of the DependencyError raised when the file cannot be locked.
    """
    with lock:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise DependencyError(unavailable) from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


@contextmanager
def reading(conn: sqlite3.Connection, lock: threading.Lock, unavailable: str) -> Iterator[sqlite3.Connection]:
    """Reads that need no write lock: each statement sees one committed state (WAL)."""
    with lock:
        try:
            yield conn
        except sqlite3.OperationalError as exc:
            raise DependencyError(unavailable) from exc
