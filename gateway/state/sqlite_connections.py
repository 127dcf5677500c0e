"""SQLite files that several threads and processes write: how to open them and how to write.

The one place the stores open SQLite: each keeps its state in one file of its own (the ledger,
the audit log, the budget ledger, the jobs, the accounts, ...). WAL mode with
`synchronous = FULL` makes a commit durable before it returns; BEGIN IMMEDIATE takes the file's
write lock at the start, so two processes never interleave the reads and writes of one
transaction.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from gateway.errors import DependencyError
from gateway.state import migrations


def connect(path: Path, *, busy_timeout_seconds: float = 30.0, same_thread: bool = False) -> sqlite3.Connection:
    """A connection to a file already in WAL mode whose commits are durable (`synchronous =
    FULL`), managing its own transactions. `busy_timeout_seconds`: how long a statement waits
    for another writer's lock (0: never, for the event loop). `same_thread`: sqlite3's check
    that only the opening thread uses it."""
    conn = sqlite3.connect(path, timeout=busy_timeout_seconds, isolation_level=None, check_same_thread=same_thread)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_seconds * 1000)}")  # an int, not input
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def open_wal(path: Path) -> sqlite3.Connection:
    """One connection, shared by the threads of a process under the caller's lock; the file
    (and its directory) created and put in WAL mode if it is not already."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    return conn


def open_read_only(path: Path) -> sqlite3.Connection:
    """A connection that cannot write: reading an installation's file to copy it elsewhere."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def migrate(conn: sqlite3.Connection, store: str, steps: Sequence[migrations.Step]) -> list[int]:
    """Bring `store`'s tables in this file up to date (`migrations.migrate`) in one BEGIN
    IMMEDIATE transaction: processes that open the file together take turns."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        done = migrations.migrate(conn.execute, store, steps)
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    return done


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
