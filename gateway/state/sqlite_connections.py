"""SQLite files that several threads and processes write: how to open them and how to write.

The one place the stores open SQLite: each keeps its state in one file of its own (the ledger,
the audit log, the budget ledger, the jobs, the accounts, ...). WAL mode with
`synchronous = FULL` makes a commit durable before it returns; BEGIN IMMEDIATE takes the file's
write lock at the start, so two processes never interleave the reads and writes of one
transaction.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Generic, TypeVar

from gateway.atomic_files import Recheck
from gateway.errors import DependencyError
from gateway.state import migrations

T = TypeVar("T")


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


def migrate_and_import(
    conn: sqlite3.Connection,
    lock: threading.Lock,
    unavailable: str,
    store: str,
    steps: Sequence[migrations.Step],
    *,
    copy: Callable[[migrations.Execute], int | None] | None = None,
) -> int | None:
    """A store's first open: its steps applied and, where `copy` is given, what an earlier release
    kept in files copied in, in one transaction; what `copy` returns (None: nothing copied). The
    connection is closed if that fails, so a store that cannot open leaves no handle behind."""
    try:
        with immediate(conn, lock, unavailable) as held:
            migrations.migrate(held.execute, store, steps)
            return copy(held.execute) if copy is not None else None
    except BaseException:
        conn.close()
        raise


def keep_as_imported(source: Path, copied: int, into: Path, log: logging.Logger, what: str) -> None:
    """The file an import copied from, renamed `<name>.imported` and kept as a backup (never read
    again), and the import logged."""
    backup = source.with_name(source.name + ".imported")
    source.rename(backup)
    log.warning("%s: %d copied from %s into %s; the file is kept as %s", what, copied, source, into, backup)


class Snapshot(Generic[T]):
    """A store's rows held in memory, read again only when another connection committed
    (`PRAGMA data_version`), which is asked at most once per recheck interval; `forget` after
    this connection's own commits, which data_version does not count."""

    def __init__(self, recheck_seconds: float) -> None:
        self._recheck = Recheck(recheck_seconds)
        self._held: tuple[int, T] | None = None

    def read(
        self, conn: sqlite3.Connection, lock: threading.Lock, unavailable: str, load: Callable[[sqlite3.Connection], T]
    ) -> T:
        due, held = self._recheck.due(), self._held  # the interval starts at the first read
        if held is not None and not due:
            return held[1]
        with reading(conn, lock, unavailable) as held_conn:
            (version,) = held_conn.execute("PRAGMA data_version").fetchone()
            if self._held is not None and self._held[0] == version:
                return self._held[1]
            found = load(held_conn)
            self._held = (int(version), found)
            return found

    def forget(self) -> None:
        self._held = None
