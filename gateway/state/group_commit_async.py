"""Group commit driven by the event loop over an asynchronous connection (`AsyncCommitter`, for
PostgreSQL). See `group_commit` for the idea."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from gateway.observability.metrics import observe_commit
from gateway.state import group_commit
from gateway.state.group_commit import Settle, store_name

Item = TypeVar("Item")


class AsyncConnection(Protocol):
    """What `AsyncCommitter` needs of a connection (`postgres_connections.AsyncDb`)."""

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
    Bound to the loop that uses it while it has work, and taken over by another only while
    idle: `offer` checks and queues in one step, so two loops on two threads never both take it.
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
        self._store = store_name(name)
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
        self._binding = threading.Lock()
        """Held to take the committer (and to give it up): the only state other threads read."""

    def offer(self, item: Item) -> bool:
        """Queue `item` from the running loop if this loop may use the committer (the loop it is
        bound to, or any while it is idle); False: take the threaded path instead."""
        loop = asyncio.get_running_loop()
        with self._binding:
            if self._closed or not (self._loop is loop or self._task is None):
                return False
            if self._loop is not loop:  # an idle committer taken over by another loop: a connection of its own
                self._drop()
                self._loop = loop
            self._pending.append(item)
            if self._task is None:  # it starts after the callbacks already ready: they may add to the batch
                self._task = loop.create_task(self._drain())
        return True

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
            with self._binding:
                self._task = None

    async def _write(self, batch: list[Item]) -> Settle:
        started = time.perf_counter()
        if self._conn is not None and time.monotonic() - self._used > group_commit.CHECK_AFTER_IDLE_SECONDS:
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
        with self._binding:  # an offer either lands before (and is failed here) or is refused
            self._closed = True
            pending, self._pending = self._pending, []
        if self._task is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._task.cancel)
        if pending:
            self._fail(pending, RuntimeError("the store closed before this was written"))
        if self._task is None:
            self._drop()
