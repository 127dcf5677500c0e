"""Group commit: whatever is waiting is written in one transaction, with one fsync.

Below the leaves (the audit log and the ledger use it), in three forms: `GroupCommitter`, one
writer thread per store for blocking callers (SQLite or PostgreSQL); `LoopCommitter`, driven by
the event loop for the request path on SQLite; and `AsyncCommitter`, the same on PostgreSQL over
an asynchronous connection. Under load many callers share one commit and one fsync; alone, a
caller waits for exactly one. All take the store's write lock (SQLite's BEGIN IMMEDIATE, or an
advisory lock), so they, and other processes, take turns.

Each store gives both the same two functions: `apply` runs a batch inside the open transaction
and returns how to settle it once the COMMIT has ended, and `fail` tells a batch's callers that
nothing of it is durable. `GroupCommitter`: callers `put` items; the writer takes the first, then
everything else already queued (up to `limit`), and writes the batch with its own connection.
`close` lets what is queued commit, then stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, Protocol, TypeVar

from gateway.observability.metrics import observe_commit

Item = TypeVar("Item")
Payload = TypeVar("Payload")


class Connection(Protocol):
    """What a writer thread needs of a connection: sqlite3's, or a PostgreSQL one wrapped alike."""

    def execute(self, sql: str, /) -> Any: ...

    def close(self) -> None: ...


Conn = TypeVar("Conn", bound=Connection)


Waiter = Future[Any] | asyncio.Future[Any]
"""Where one caller learns its outcome: a thread's future, or a coroutine's."""


def resolve(waiter: Waiter, result: Any, error: BaseException | None) -> None:
    """Tell one caller its outcome, unless it stopped waiting (a request whose client left)."""
    if waiter.done():
        return
    if error is not None:
        waiter.set_exception(error)
    else:
        waiter.set_result(result)


def _store(name: str) -> str:
    """The store a writer serves, from its name (`audit-writer`: audit), for the metrics."""
    return name.removeprefix("veilgate-").split("-", 1)[0]


Settle = Callable[[BaseException | None], None]
"""Given how the COMMIT ended (None: durable), tells every caller of a batch its outcome."""


CHECK_AFTER_IDLE_SECONDS = 1.0
"""A writer's connection idle this long is checked (one `SELECT 1`) before its next batch: one
cut meanwhile (a database restart, a failover) is replaced before it fails a batch. Under load
batches follow each other and nothing is checked."""


def _sound(conn: Connection) -> bool:
    try:
        conn.execute("SELECT 1")
    except Exception:
        with contextlib.suppress(Exception):
            conn.close()
        return False
    return True


class GroupCommitter(Generic[Item, Conn]):
    """`begin`: the statements that open a batch's transaction and take the store's write lock
    (SQLite: BEGIN IMMEDIATE; PostgreSQL: BEGIN and an advisory lock)."""

    def __init__(
        self,
        name: str,
        connect: Callable[[], Conn],
        apply: Callable[[Conn, list[Item]], Settle],
        *,
        limit: int,
        fail: Callable[[list[Item], BaseException], None],
        begin: tuple[str, ...] = ("BEGIN IMMEDIATE",),
    ) -> None:
        self._name = name
        self._begin = begin
        self._connect = connect
        self._apply = apply
        self._fail = fail
        self._limit = limit
        self._queue: queue.SimpleQueue[Item | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._lock = threading.Lock()

    def put(self, item: Item) -> None:
        """Queue `item`, starting the writer on first use."""
        with self._lock:
            if self._writer is None:
                self._writer = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._writer.start()
        self._queue.put(item)

    def close(self) -> None:
        with self._lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            self._queue.put(None)
            writer.join()

    def _loop(self) -> None:
        conn: Conn | None = None
        used = time.monotonic()
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batch = [first]
                while len(batch) < self._limit:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        self._queue.put(None)  # stop after this batch
                        break
                    batch.append(item)
                try:
                    if conn is not None and time.monotonic() - used > CHECK_AFTER_IDLE_SECONDS and not _sound(conn):
                        conn = None
                    if conn is None:
                        conn = self._connect()
                    self._write(conn, batch)
                    used = time.monotonic()
                except Exception as exc:  # nothing of the batch is durable: every caller learns it
                    self._fail(batch, exc)
                    # A connection that failed may be broken (a database server restarted): the
                    # next batch opens a new one.
                    with contextlib.suppress(Exception):
                        if conn is not None:
                            conn.close()
                    conn = None
        finally:
            if conn is not None:
                conn.close()

    def _write(self, conn: Conn, batch: list[Item]) -> None:
        """BEGIN (taking the write lock), the batch, COMMIT; then every caller learns its outcome.
        Raises if nothing of the batch is durable."""
        started = time.perf_counter()
        conn.execute(self._begin[0])
        try:
            for statement in self._begin[1:]:
                conn.execute(statement)
            settle = self._apply(conn, batch)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            raise
        observe_commit(_store(self._name), len(batch), time.perf_counter() - started)
        settle(None)


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
    open transaction and returns how to settle it; it must not block. Bound to the first loop
    that uses it; `usable()` tells a caller on another loop to take the threaded path instead.
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
        self._store = _store(name)
        self._closed = False

    def usable(self) -> bool:
        """Whether the running loop may `put` here: the loop this is bound to, or any while idle."""
        if self._closed:
            return False
        loop = asyncio.get_running_loop()
        return self._loop is loop or not self._running

    def put(self, item: Item) -> None:
        """Queue `item` from the running loop (check `usable()` first)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._pending.append(item)
        if not self._running:
            self._running = True
            loop.call_soon(self._flush)  # after the callbacks already ready: they may add to the batch

    def close(self) -> None:
        self._closed = True
        self._committer.shutdown(wait=True)
        if self._pending:
            pending, self._pending = self._pending, []
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
        if self._pending and self._loop is not None and not self._closed:
            self._loop.call_soon(self._flush)
        else:
            self._running = False


class AsyncConnection(Protocol):
    """What `AsyncCommitter` needs of a connection (`postgres_db.AsyncDb`)."""

    async def execute(self, sql: str, params: Sequence[Any] = (), /) -> Any: ...

    def pipeline(self) -> contextlib.AbstractAsyncContextManager[Any]: ...

    def close(self) -> None: ...


AsyncConn = TypeVar("AsyncConn", bound=AsyncConnection)


class AsyncCommitter(Generic[Item, AsyncConn]):
    """Group commit driven by the event loop over an asynchronous connection (PostgreSQL).

    A writer thread on PostgreSQL waits on the network several times a batch, and each time it
    wants the GIL back while the loop holds it for request work: measured, the loop then lost
    more time to the hand-offs than the statements took, and batches stayed small. Here every
    statement is awaited on the loop, and a batch's transaction runs in pipeline mode: BEGIN, the
    lock and the batch's first read travel together, and so do its writes and the COMMIT (two
    round trips, not one per statement). Items that arrive while a batch is in flight form the
    next batch. `begin`: the statements after BEGIN that take the store's lock. A batch that
    fails is failed as a whole, and the next one opens a new connection (a restart, a failover).
    Bound to the first loop that uses it; `usable()` tells a caller on another loop to take the
    threaded path instead.
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[AsyncConn]],
        apply: Callable[[AsyncConn, list[Item]], Awaitable[Settle]],
        *,
        limit: int,
        fail: Callable[[list[Item], BaseException], None],
        begin: tuple[str, ...] = (),
        name: str = "other",
    ) -> None:
        self._store = _store(name)
        self._connect = connect
        self._apply = apply
        self._fail = fail
        self._limit = limit
        self._begin = begin
        self._conn: AsyncConn | None = None
        self._used = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[Item] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def usable(self) -> bool:
        """Whether the running loop may `put` here: the loop this is bound to, or any while idle."""
        if self._closed:
            return False
        return self._loop is asyncio.get_running_loop() or self._task is None

    def put(self, item: Item) -> None:
        """Queue `item` from the running loop (check `usable()` first)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # an idle committer taken over by another loop: a connection of its own
            self._drop()
            self._loop = loop
        self._pending.append(item)
        if self._task is None:  # it starts after the callbacks already ready: they may add to the batch
            self._task = loop.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._pending and not self._closed:
                batch, self._pending = self._pending[: self._limit], self._pending[self._limit :]
                try:
                    settle = await self._write(batch)
                except BaseException as exc:  # nothing of the batch is durable: every caller learns it
                    self._fail(batch, exc)
                    self._drop()
                    if not isinstance(exc, Exception):
                        raise
                    continue
                settle(None)
        finally:
            self._task = None

    async def _write(self, batch: list[Item]) -> Settle:
        started = time.perf_counter()
        if self._conn is not None and time.monotonic() - self._used > CHECK_AFTER_IDLE_SECONDS:
            try:  # idle a while: cut meanwhile? (see CHECK_AFTER_IDLE_SECONDS)
                await self._conn.execute("SELECT 1")
            except Exception:
                self._drop()
        if self._conn is None:
            self._conn = await self._connect()
        conn = self._conn
        try:
            async with conn.pipeline():  # its end waits for the COMMIT, and raises if it failed
                await conn.execute("BEGIN")
                for statement in self._begin:
                    await conn.execute(statement)
                settle = await self._apply(conn, batch)
                await conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.execute("ROLLBACK")
            raise
        self._used = time.monotonic()
        observe_commit(self._store, len(batch), time.perf_counter() - started)
        return settle

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None

    def close(self) -> None:
        """Fail what is still queued and close the connection; a batch in flight is cancelled."""
        self._closed = True
        if self._task is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._task.cancel)
        if self._pending:
            pending, self._pending = self._pending, []
            self._fail(pending, RuntimeError("the store closed before this was written"))
        if self._task is None:
            self._drop()


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


Queued_contra = TypeVar("Queued_contra", contravariant=True)


class LoopWriter(Protocol[Queued_contra]):
    """A committer driven by the running loop: `LoopCommitter` or `AsyncCommitter`."""

    def usable(self) -> bool: ...

    def put(self, item: Queued_contra) -> None: ...


async def written(
    payload: Payload,
    loop_writer: LoopWriter[tuple[Payload, Waiter]],
    thread_writer: GroupCommitter[tuple[Payload, Waiter], Any],
) -> Any:
    """What `payload` gets once its batch is durable, written from the running loop: by the loop's
    committer, or by the writer thread when that committer is bound to another loop."""
    if loop_writer.usable():
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        loop_writer.put((payload, waiter))
        return await waiter
    future: Future[Any] = Future()
    thread_writer.put((payload, future))
    return await asyncio.wrap_future(future)
