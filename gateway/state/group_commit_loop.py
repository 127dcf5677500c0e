"""Group commit on SQLite driven by the event loop (`LoopCommitter`), and a store's two SQLite
writers (`sqlite_committers`): the thread's and the loop's. See `group_commit` for the idea."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from gateway.observability.metrics import observe_commit
from gateway.state.group_commit import GroupCommitter, Settle, store_name

Item = TypeVar("Item")


_RETRY_FIRST_SECONDS = 0.0001
_RETRY_MOST_SECONDS = 0.001


class LoopCommitter(Generic[Item]):
    """Group commit driven by the event loop, for callers that are coroutines.

    The statements of a batch run on the loop, which owns the GIL anyway, and only the COMMIT
    (the fsync) runs in a thread. A writer thread that ran the statements itself would take and
    give back the GIL around every SQLite call while the loop holds it for request work: measured
    here, those hand-offs cost more CPU than the statements. Items that arrive while a COMMIT is
    in flight form the next batch, so a slow disk makes batches larger, not queues longer.

    The loop never waits on the file lock: BEGIN IMMEDIATE is tried without a busy timeout and,
    while another writer (another process, or this process's `GroupCommitter`) holds the lock,
    retried a moment later, for at most `busy_timeout_seconds`. `apply` runs a batch inside the
    open transaction and returns how to settle it; it must not block. Bound to the loop that
    uses it while it has work, and taken over by another only while idle: `offer` checks and
    queues in one step, so two loops on two threads never both take it.
    """

    def __init__(
        self,
        name: str,
        connect: Callable[[], sqlite3.Connection],
        apply: Callable[[sqlite3.Connection, list[Item]], Settle],
        *,
        limit: int,
        fail: Callable[[list[Item], BaseException], None],
        busy_timeout_seconds: float = 30.0,
    ) -> None:
        self._connect = connect
        self._apply = apply
        self._fail = fail
        self._limit = limit
        self._busy_timeout = busy_timeout_seconds
        self._conn: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[Item] = []
        self._running = False
        self._locked_since: float | None = None
        self._retry_delay = _RETRY_FIRST_SECONDS
        self._committer = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._store = store_name(name)
        self._closed = False
        self._binding = threading.Lock()
        """Held to take the committer (and to give it up): the only state other threads read."""

    def offer(self, item: Item) -> bool:
        """Queue `item` from the running loop if this loop may use the committer (the loop it is
        bound to, or any while it is idle); False: take the threaded path instead."""
        loop = asyncio.get_running_loop()
        with self._binding:
            if self._closed or not (self._loop is loop or not self._running):
                return False
            self._loop = loop
            self._pending.append(item)
            if not self._running:
                self._running = True
                loop.call_soon(self._flush)  # after the callbacks already ready: they may add to the batch
        return True

    def close(self) -> None:
        with self._binding:  # an offer either lands before (and is failed here) or is refused
            self._closed = True
        self._committer.shutdown(wait=True)
        with self._binding:
            pending, self._pending = self._pending, []
        if pending:
            self._fail(pending, RuntimeError("the store closed before this was written"))
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _flush(self) -> None:
        loop = self._loop
        if loop is None or self._closed:  # `put` sets the loop before it schedules this
            return
        started = time.perf_counter()
        try:
            if self._conn is None:
                self._conn = self._connect()
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            if isinstance(exc, sqlite3.OperationalError) and self._wait_for_lock(exc):
                loop.call_later(self._retry_delay, self._flush)
                return
            batch, self._pending = self._pending, []  # the file cannot be written: tell everyone
            self._fail(batch, exc)
            self._after()
            return
        self._locked_since, self._retry_delay = None, _RETRY_FIRST_SECONDS
        batch, self._pending = self._pending[: self._limit], self._pending[self._limit :]
        try:
            settle = self._apply(conn, batch)
            committing = loop.run_in_executor(self._committer, conn.execute, "COMMIT")
        except BaseException as exc:  # nothing of the batch is written; the next one may be
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            self._fail(batch, exc)
            self._after()
            return
        items = len(batch)
        committing.add_done_callback(lambda done: self._committed(conn, done, settle, items, started))

    def _wait_for_lock(self, exc: sqlite3.OperationalError) -> bool:
        """Whether to try again later: the lock is held by another writer, not for too long."""
        if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_BUSY:
            return False
        now = time.monotonic()
        if self._locked_since is None:
            self._locked_since = now
        elif now - self._locked_since > self._busy_timeout:
            self._locked_since, self._retry_delay = None, _RETRY_FIRST_SECONDS
            return False
        self._retry_delay = min(self._retry_delay * 2, _RETRY_MOST_SECONDS)
        return True

    def _committed(
        self, conn: sqlite3.Connection, done: asyncio.Future[Any], settle: Settle, items: int, started: float
    ) -> None:
        error = done.exception()
        if error is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        else:
            observe_commit(self._store, items, time.perf_counter() - started)
        settle(error)
        self._after()

    def _after(self) -> None:
        with self._binding:
            if self._pending and self._loop is not None and not self._closed:
                self._loop.call_soon(self._flush)
            else:
                self._running = False


def sqlite_committers(
    name: str,
    connect: Callable[[bool], sqlite3.Connection],
    apply: Callable[[sqlite3.Connection, list[Item]], Settle],
    *,
    limit: int,
    fail: Callable[[list[Item], BaseException], None],
    busy_timeout_seconds: float,
) -> tuple[GroupCommitter[Item, sqlite3.Connection], LoopCommitter[Item]]:
    """A store's two writers on its SQLite file: a thread for blocking callers, and the event loop
    for the request path. `connect(wait)`: a connection that waits for the file lock (the
    thread's), or one that never does (the loop's)."""
    thread: GroupCommitter[Item, sqlite3.Connection] = GroupCommitter(
        f"{name}-writer", lambda: connect(True), apply, limit=limit, fail=fail
    )
    on_loop = LoopCommitter(
        f"{name}-commit",
        lambda: connect(False),
        apply,
        limit=limit,
        fail=fail,
        busy_timeout_seconds=busy_timeout_seconds,
    )
    return thread, on_loop
