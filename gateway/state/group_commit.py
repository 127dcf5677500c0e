"""Group commit: whatever is waiting is written in one transaction, with one fsync.

Below the stores (the audit log and the ledger use it), in three forms: `GroupCommitter` (here),
one writer thread per store for blocking callers (SQLite or PostgreSQL); `LoopCommitter`
(`group_commit_loop`), driven by the event loop for the request path on SQLite; and
`AsyncCommitter` (`group_commit_async`), the same on PostgreSQL over an asynchronous connection.
Under load many callers share one commit and one fsync; alone, a caller waits for exactly one.
All take the store's write lock (SQLite's BEGIN IMMEDIATE, or an advisory lock), so they, and
other processes, take turns.

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
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
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


def store_name(name: str) -> str:
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
        observe_commit(store_name(self._name), len(batch), time.perf_counter() - started)
        settle(None)


Queued_contra = TypeVar("Queued_contra", contravariant=True)


class LoopWriter(Protocol[Queued_contra]):
    """A committer driven by the running loop: `LoopCommitter` or `AsyncCommitter`."""

    def offer(self, item: Queued_contra) -> bool:
        """Queued by the running loop, or False: the committer is another loop's."""
        ...


async def written(
    payload: Payload,
    loop_writer: LoopWriter[tuple[Payload, Waiter]],
    thread_writer: GroupCommitter[tuple[Payload, Waiter], Any],
) -> Any:
    """What `payload` gets once its batch is durable, written from the running loop: by the loop's
    committer, or by the writer thread when that committer is bound to another loop."""
    waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    if loop_writer.offer((payload, waiter)):
        return await waiter
    future: Future[Any] = Future()
    thread_writer.put((payload, future))
    return await asyncio.wrap_future(future)
