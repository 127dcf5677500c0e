"""PostgreSQL for the stores that replicas on several machines share: the ledgers, the audit log,
the freezes, the jobs and the client accounts.

The stores keep one set of SQL, written with SQLite's `?` placeholders; `Db` runs it on a psycopg
connection. Connections are named (`application_name`), live in the deployment's schema, and
`Reader` reads once more on a new connection after a cut (a restart, a failover). A process holds
few: the stores read rarely share one (`Reader.shared`), the values kept in memory share one
listener (`Watched`), and the ledger and the audit log each write through `committers`. psycopg
is imported only here and only when a DSN is configured: installations on SQLite need no driver.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from gateway.errors import ConfigurationError, DependencyError
from gateway.group_commit import AsyncCommitter, GroupCommitter, Settle

if TYPE_CHECKING:  # the driver is optional at run time
    from psycopg import AsyncConnection, Connection

    PgConnection = Connection[tuple[Any, ...]]
    PgAsyncConnection = AsyncConnection[tuple[Any, ...]]

Value = TypeVar("Value")
log = logging.getLogger("veilgate.postgres")


def driver() -> ModuleType:
    try:
        import psycopg  # noqa: PLC0415 - optional: only installations on PostgreSQL need the driver
    except ImportError:
        raise ConfigurationError("PostgreSQL is configured but its driver is not installed: "
                                 "pip install 'veilgate[postgres]'") from None  # fmt: skip
    return psycopg


KEEPALIVES: dict[str, int] = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 60_000,
}
"""libpq's TCP settings on every connection: a peer that vanished (a failover, a cut cable)
is noticed within about a minute, idle or not, instead of when the kernel gives up (hours)."""

POOL_TIMEOUT_SECONDS = 5.0
"""How long a pooled store waits for a connection before it answers 503."""


def connect(dsn: str, schema: str, *, name: str, unavailable: str) -> PgConnection:
    """An autocommit connection whose search path is `schema` (created if missing).

    `unavailable`: the message of the DependencyError raised when the server cannot be reached.
    """
    psycopg = driver()
    try:
        conn: PgConnection = psycopg.connect(dsn, autocommit=True, application_name=name, **KEEPALIVES)
        # SECURITY: the schema name goes in as a quoted identifier (psycopg.sql), never as text.
        identifier = psycopg.sql.Identifier(schema)
        conn.execute(psycopg.sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(identifier))
        conn.execute(psycopg.sql.SQL("SET search_path TO {}").format(identifier))
    except psycopg.Error as exc:
        raise DependencyError(unavailable) from exc
    return conn


async def connect_async(dsn: str, schema: str, *, name: str, unavailable: str) -> AsyncDb:
    """`connect`, for the event loop (`group_commit.AsyncCommitter`)."""
    psycopg = driver()
    try:
        conn: PgAsyncConnection = await psycopg.AsyncConnection.connect(
            dsn, autocommit=True, application_name=name, **KEEPALIVES
        )
        identifier = psycopg.sql.Identifier(schema)  # SECURITY: a quoted identifier, as in `connect`
        await conn.execute(psycopg.sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(identifier))
        await conn.execute(psycopg.sql.SQL("SET search_path TO {}").format(identifier))
    except psycopg.Error as exc:
        raise DependencyError(unavailable) from exc
    return AsyncDb(conn)


class Pool:
    """Connections of one store from psycopg_pool: each checked when taken (a connection cut by
    a restart or a failover is replaced, not handed out), reopened in the background while the
    server is away, and closed after `max_idle`. A transaction that fails on the network raises
    DependencyError; the next one gets a sound connection."""

    def __init__(self, dsn: str, schema: str, *, name: str, unavailable: str, max_size: int = 4) -> None:
        psycopg = driver()
        try:
            from psycopg_pool import ConnectionPool  # noqa: PLC0415 - optional, with the driver
        except ImportError:
            raise ConfigurationError("PostgreSQL is configured but psycopg_pool is not installed: "
                                     "pip install 'veilgate[postgres]'") from None  # fmt: skip
        self._psycopg = psycopg
        self._unavailable = unavailable
        identifier = psycopg.sql.Identifier(schema)  # SECURITY: a quoted identifier, as in `connect`

        def configure(conn: PgConnection) -> None:
            conn.execute(psycopg.sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(identifier))
            conn.execute(psycopg.sql.SQL("SET search_path TO {}").format(identifier))

        self._pool: Any = ConnectionPool(
            dsn,
            kwargs={"autocommit": True, "application_name": name, **KEEPALIVES},
            min_size=1,
            max_size=max_size,
            configure=configure,
            check=ConnectionPool.check_connection,
            timeout=POOL_TIMEOUT_SECONDS,
            reconnect_timeout=3600.0,
            name=name,
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=POOL_TIMEOUT_SECONDS)
        except Exception as exc:  # the pool's timeout, or the server refused
            self._pool.close()
            raise DependencyError(unavailable) from exc

    @contextlib.contextmanager
    def transaction(self) -> Iterator[PgConnection]:
        """One transaction on a checked connection: committed when the block ends, rolled back
        if it raises; a network failure or an exhausted pool is DependencyError."""
        try:
            with self._pool.connection() as conn, conn.transaction():
                yield conn
        except (self._psycopg.OperationalError, self._pool_timeout()) as exc:
            raise DependencyError(self._unavailable) from exc

    def _pool_timeout(self) -> type[Exception]:
        from psycopg_pool import PoolTimeout  # noqa: PLC0415 - optional, with the driver

        return PoolTimeout

    def close(self) -> None:
        self._pool.close()


Item = TypeVar("Item")


def committers(
    dsn: str,
    schema: str,
    *,
    name: str,
    unavailable: str,
    lock: int,
    apply: Callable[[Db, list[Item]], Settle],
    apply_on_loop: Callable[[AsyncDb, list[Item]], Awaitable[Settle]],
    fail: Callable[[list[Item], BaseException], None],
    limit: int,
) -> tuple[GroupCommitter[Item, Db], AsyncCommitter[Item, AsyncDb]]:
    """A store's two writers: a thread for blocking callers, and the event loop for the request
    path (`AsyncCommitter`). Every batch of either holds the store's advisory lock `lock`, so
    the batches of every replica take turns."""
    take_lock = f"SELECT pg_advisory_xact_lock({int(lock)})"  # an integer, not input
    thread: GroupCommitter[Item, Db] = GroupCommitter(
        f"{name}-writer",
        lambda: Db(connect(dsn, schema, name=name, unavailable=unavailable)),
        apply,
        limit=limit,
        fail=fail,
        begin=("BEGIN", take_lock),
    )
    on_loop: AsyncCommitter[Item, AsyncDb] = AsyncCommitter(
        functools.partial(connect_async, dsn, schema, name=name, unavailable=unavailable),
        apply_on_loop,
        limit=limit,
        fail=fail,
        begin=(take_lock,),
        name=name,
    )
    return thread, on_loop


class Db:
    """A psycopg connection that takes SQL as written for SQLite (`?` placeholders, no `%`)."""

    def __init__(self, conn: PgConnection) -> None:
        self._conn = conn

    @staticmethod
    @functools.cache
    def _sql(sql: str) -> str:
        return sql.replace("?", "%s")

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> Any:
        return self._conn.execute(self._sql(sql), params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> None:
        rows = list(rows)
        if rows:
            self._conn.cursor().executemany(self._sql(sql), rows)

    def pipeline(self) -> contextlib.AbstractContextManager[Any]:
        """Statements whose results are not read go with the next read, not one round trip each."""
        return self._conn.pipeline()

    def close(self) -> None:
        self._conn.close()


class AsyncDb:
    """`Db` on the event loop: the same SQL, awaited."""

    def __init__(self, conn: PgAsyncConnection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = (), /) -> Any:
        return await self._conn.execute(Db._sql(sql), params)

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cursor = await self._conn.execute(Db._sql(sql), params)
        found: list[tuple[Any, ...]] = await cursor.fetchall()
        return found

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> None:
        rows = list(rows)
        if rows:
            await self._conn.cursor().executemany(Db._sql(sql), rows)

    def pipeline(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """As `Db.pipeline`."""
        return self._conn.pipeline()

    def close(self) -> None:
        """Close at once, from any thread: psycopg's own `close` is a coroutine, and a store is
        closed by blocking code (at shutdown, with nothing in flight)."""
        self._conn.pgconn.finish()


Tables = Sequence[tuple[str, Sequence[str]]]
"""(table, columns): what a store copies from its SQLite file, under the same names."""


def is_empty(db: Db, tables: Tables) -> bool:
    """Whether none of `tables` holds a row: a store that may take an installation's history."""
    # SECURITY: table names are the stores' own constants, never input.
    return not any(db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchall() for table, _columns in tables)  # noqa: S608


def copy_tables(db: Db, source: Path, tables: Tables) -> int:
    """Copy `tables` from the SQLite file `source` (opened read-only) into the same tables here,
    inside the caller's transaction: moving an installation's history to PostgreSQL. Returns the
    rows copied."""
    copied = 0
    with contextlib.closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as sqlite:
        for table, columns in tables:
            names = ", ".join(columns)
            # SECURITY: table and column names are the stores' own constants, never input.
            rows = sqlite.execute(f"SELECT {names} FROM {table}").fetchall()  # noqa: S608
            db.executemany(f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})", rows)  # noqa: S608
            copied += len(rows)
    return copied


class _Session:
    """A connection and the lock that orders its users: one `Reader`'s own, or shared by the
    `Reader.shared` handles of one process."""

    def __init__(self, dsn: str, schema: str, name: str) -> None:
        self.dsn, self.schema, self.name = dsn, schema, name
        self.lock = threading.RLock()  # a read inside a store's transaction runs in it
        self.conn: PgConnection | None = None
        self.users = 0


_sharing = threading.Lock()
"""Guards the shared sessions and listeners, and who uses them."""
_shared_sessions: dict[tuple[int, str, str], _Session] = {}


class Reader:
    """A store's connection for what is not written in group commits (reads, setting up tables,
    its own small transactions), shared by the threads of a process. A connection that was cut
    (a restart, a failover) is replaced: a read is tried once more at once, a transaction fails
    (DependencyError) and the next one runs on a new connection."""

    def __init__(self, dsn: str, schema: str, *, name: str, unavailable: str, session: _Session | None = None) -> None:
        """`session`: a shared one, already counting this handle among its users (`shared`)."""
        if session is None:
            session = _Session(dsn, schema, name)
            session.users = 1
        self._session = session
        self._unavailable = unavailable
        try:
            with self._session.lock:
                self._connection()  # fail fast: a store that cannot be read does not open
        except DependencyError:
            self.close()
            raise

    @classmethod
    def shared(cls, dsn: str, schema: str, *, unavailable: str) -> Reader:
        """A handle on the one connection (`veilgate-reader`) that the stores of a process read
        rarely through (accounts, freezes, policy, jobs, objections): one connection for them
        all, not one each. Their transactions take turns; errors still name the store."""
        with _sharing:  # found and counted at once: a last handle closing meanwhile cannot drop it
            key = (os.getpid(), dsn, schema)  # a forked process opens its own
            session = _shared_sessions.setdefault(key, _Session(dsn, schema, "veilgate-reader"))
            session.users += 1
        return cls(dsn, schema, name=session.name, unavailable=unavailable, session=session)

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._session.lock:
            found: list[tuple[Any, ...]] = self._run(sql, params).fetchall()
            return found

    def write(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One statement in its own transaction (autocommit); how many rows it changed."""
        with self._session.lock:
            changed: int = self._run(sql, params).rowcount
            return changed

    def _run(self, sql: str, params: Sequence[Any]) -> Any:
        try:
            return Db(self._connection()).execute(sql, params)
        except driver().OperationalError:
            self._drop()
        try:
            return Db(self._connection()).execute(sql, params)
        except driver().OperationalError as exc:
            self._drop()
            raise DependencyError(self._unavailable) from exc

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Db]:
        """One transaction, under the lock: committed when the block ends, rolled back if it raises."""
        with self._session.lock:
            conn = self._connection()
            try:
                with conn.transaction():
                    yield Db(conn)
            except driver().OperationalError as exc:
                self._drop()
                raise DependencyError(self._unavailable) from exc

    def create_tables(self, store: str, statements: Sequence[str]) -> None:
        """Run a store's CREATE ... IF NOT EXISTS statements, one replica at a time (an advisory
        lock named after `store`: two replicas starting together would race on the catalog)."""
        with self.transaction() as db:
            db.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (store,))
            for statement in statements:
                db.execute(statement)

    def _connection(self) -> PgConnection:
        session = self._session
        if session.conn is None:
            session.conn = connect(session.dsn, session.schema, name=session.name, unavailable=self._unavailable)
        return session.conn

    def _drop(self) -> None:
        if self._session.conn is not None:
            with contextlib.suppress(Exception):
                self._session.conn.close()
        self._session.conn = None

    def close(self) -> None:
        """The connection closes with the last handle on it."""
        with _sharing:
            self._session.users -= 1
            if self._session.users:
                return
            for key, session in list(_shared_sessions.items()):
                if session is self._session:
                    del _shared_sessions[key]
        with self._session.lock:
            self._drop()


_RELISTEN_SECONDS = 1.0
"""After a failure, how long the listener waits before it connects again."""
_WAKE_SECONDS = 0.05
"""How often the listener looks for new values to watch, and whether it should stop."""
HEARTBEAT_SECONDS = 10.0
"""How often the listener proves its connection (a query must come back) and reads every value
again: a notice lost on a connection that died without a word (half-open: no error, no notice)
is made up for within this, and the TCP settings (`KEEPALIVES`) end such a connection."""


class Watched(Generic[Value]):
    """A value read from PostgreSQL and kept in memory, renewed whenever a change NOTIFYs
    `channel`: what every request consults (freezes, client accounts) at no database cost.

    While the process's listener is not connected, `get` reads the value on every call instead
    (a change is never missed, only slower to see), and fails while it cannot read it. A change
    made through this process calls `renew`, so it is in force here on the next request, notice
    or not.
    """

    def __init__(
        self,
        dsn: str,
        schema: str,
        *,
        channel: str,
        load: Callable[[], Value],
        listen: bool = True,
    ) -> None:
        """`listen=False`: no copy, `get` always reads (a CLI command, say)."""
        self.channel = channel
        self._load = load
        self._value: Value | None = None
        self._live = False
        """Whether the listener is connected and listening here: only then is a copy kept."""
        self._reload_lock = threading.Lock()
        self._closed = False
        self.listening = threading.Event()
        self._listener = _Listener.join(dsn, schema, self) if listen else None
        if listen:
            self.listening.wait(timeout=5)  # usually at once; until then, `get` reads

    def get(self) -> Value:
        value = self._value
        return value if value is not None else self._load()

    def renew(self) -> None:
        """After a change made through this process (already committed): a failed read drops
        the copy, so that `get` reads until the next notice."""
        try:
            self._reload()
        except Exception:
            with self._reload_lock:
                self._value = None
            log.warning("%s: renewing after a change failed; reading on every request", self.channel, exc_info=True)

    @property
    def live(self) -> bool:
        return self._live

    def _reload(self) -> None:
        """Read and replace as one step, and only while listening: a read that began before a
        change cannot replace one that saw it, nor a copy outlive its listener."""
        with self._reload_lock:
            if self._live:
                self._value = self._load()

    def set_live(self, live: bool) -> None:
        """For the listener: listening now (then `_reload`), or not (`get` reads)."""
        with self._reload_lock:
            self._live = live and not self._closed  # a notice that races `close` reads nothing
            self._value = None

    def close(self) -> None:
        with self._reload_lock:
            self._closed = True
        self.set_live(False)
        if self._listener is not None:
            self._listener.leave(self)


_listeners: dict[tuple[int, str, str], _Listener] = {}


class _Listener:
    """The one LISTEN connection of a process (`veilgate-listener`), for every `Watched` value:
    one connection and one thread, not one each. On a failure, every value it serves is read
    on each use until it listens again."""

    def __init__(self, dsn: str, schema: str) -> None:
        self._key = (os.getpid(), dsn, schema)
        self._connect = functools.partial(
            connect, dsn, schema, name="veilgate-listener", unavailable="change notices cannot be received"
        )
        self._watched: list[Watched[Any]] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="veilgate-listener", daemon=True)

    @classmethod
    def join(cls, dsn: str, schema: str, watched: Watched[Any]) -> _Listener:
        with _sharing:
            listener = _listeners.get((os.getpid(), dsn, schema))
            if listener is None:
                listener = _listeners[(os.getpid(), dsn, schema)] = cls(dsn, schema)
                listener._thread.start()
            listener._watched.append(watched)
        return listener

    def leave(self, watched: Watched[Any]) -> None:
        """The thread stops with the last value it serves."""
        with _sharing:
            self._watched.remove(watched)
            if self._watched:
                return
            del _listeners[self._key]
        self._stopping.set()
        self._thread.join(timeout=_RELISTEN_SECONDS + 1)

    def _serving(self) -> list[Watched[Any]]:
        with _sharing:
            return list(self._watched)

    def _listen(self) -> None:
        """LISTEN on each value's channel, load it, then reload on every notice; on a failure,
        every value reads on each use until this connects and listens again."""
        while not self._stopping.is_set():
            conn = None
            try:
                conn = self._connect()
                channels: set[str] = set()
                beat = time.monotonic()
                while not self._stopping.is_set():
                    serving = self._serving()
                    for watched in serving:
                        if watched.channel not in channels:
                            conn.execute(f"LISTEN {watched.channel}")  # a fixed name of a store, not input
                            channels.add(watched.channel)
                        if not watched.live:  # new here, or after a failure
                            watched.set_live(True)
                            watched._reload()  # after LISTEN: no change falls between the two
                            watched.listening.set()
                    for notice in conn.notifies(timeout=_WAKE_SECONDS, stop_after=1):
                        for watched in serving:
                            if watched.channel == notice.channel:
                                watched._reload()
                    if time.monotonic() - beat >= HEARTBEAT_SECONDS:
                        conn.execute("SELECT 1")  # raises on a dead connection: read on each use, reconnect
                        for watched in serving:  # whatever a lost notice would have said
                            watched._reload()
                        beat = time.monotonic()
            except Exception:  # any failure: read on every use, and try again
                for watched in self._serving():
                    watched.set_live(False)
                log.warning("listening for changes failed; reading on every request until it works", exc_info=True)
                self._stopping.wait(_RELISTEN_SECONDS)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
