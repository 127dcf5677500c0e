"""PostgreSQL for the stores that replicas on several machines share: the ledgers, the audit log,
the freezes, the jobs and the client accounts.

The stores keep one set of SQL, written with SQLite's `?` placeholders; `Db` runs it on a psycopg
connection. Connections are named (`application_name`), live in the deployment's schema, and
`Reader` reads once more on a new connection after a cut (a restart, a failover). psycopg is
imported only here and only when a DSN is configured: installations on SQLite need no driver.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from gateway.errors import ConfigurationError, DependencyError

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


def connect(dsn: str, schema: str, *, name: str, unavailable: str) -> PgConnection:
    """An autocommit connection whose search path is `schema` (created if missing).

    `unavailable`: the message of the DependencyError raised when the server cannot be reached.
    """
    psycopg = driver()
    try:
        conn: PgConnection = psycopg.connect(dsn, autocommit=True, application_name=name)
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
        conn: PgAsyncConnection = await psycopg.AsyncConnection.connect(dsn, autocommit=True, application_name=name)
        identifier = psycopg.sql.Identifier(schema)  # SECURITY: a quoted identifier, as in `connect`
        await conn.execute(psycopg.sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(identifier))
        await conn.execute(psycopg.sql.SQL("SET search_path TO {}").format(identifier))
    except psycopg.Error as exc:
        raise DependencyError(unavailable) from exc
    return AsyncDb(conn)


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


class Reader:
    """One connection shared by the threads of a process, for what is not written in group
    commits (reads, setting up tables, a store's own small transactions). A connection that was
    cut (a restart, a failover) is replaced: a read is tried once more at once, a transaction
    fails (DependencyError) and the next one runs on a new connection."""

    def __init__(self, dsn: str, schema: str, *, name: str, unavailable: str) -> None:
        self._open = functools.partial(connect, dsn, schema, name=name, unavailable=unavailable)
        self._unavailable = unavailable
        self._lock = threading.RLock()  # a read inside a store's transaction runs in it
        self._conn: PgConnection | None = self._open()

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            found: list[tuple[Any, ...]] = self._run(sql, params).fetchall()
            return found

    def write(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One statement in its own transaction (autocommit); how many rows it changed."""
        with self._lock:
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
        with self._lock:
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
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()


_RELISTEN_SECONDS = 1.0
"""After a failure, how long the listener waits before it connects again."""
_WAKE_SECONDS = 0.25
"""How often a waiting listener checks whether it should stop (`close` waits at most this long)."""


class Watched(Generic[Value]):
    """A value read from PostgreSQL and kept in memory, renewed whenever a change NOTIFYs
    `channel`: what every request consults (freezes, client accounts) at no database cost.

    While the listening connection is down, `get` reads the value on every call instead (a
    change is never missed, only slower to see), and fails while it cannot read it. A change made
    through this process calls `renew`, so it is in force here on the next request, notice or not.
    """

    def __init__(
        self,
        dsn: str,
        schema: str,
        *,
        name: str,
        channel: str,
        load: Callable[[], Value],
        unavailable: str,
        listen: bool = True,
    ) -> None:
        """`name`: of the listening connection; `listen=False`: no copy, `get` always reads."""
        self._connect = functools.partial(connect, dsn, schema, name=name, unavailable=unavailable)
        self._channel = channel
        self._load = load
        self._value: Value | None = None
        self._live = False
        """Whether the listener is connected: only then is a copy kept (`_value`)."""
        self._reload_lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener: threading.Thread | None = None
        if listen:
            listening = threading.Event()
            self._listener = threading.Thread(target=self._listen, args=(listening,), name=name, daemon=True)
            self._listener.start()
            listening.wait(timeout=5)  # usually at once; until then, `get` reads

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
            log.warning("%s: renewing after a change failed; reading on every request", self._channel, exc_info=True)

    def _reload(self) -> None:
        """Read and replace as one step, and only while listening: a read that began before a
        change cannot replace one that saw it, nor a copy outlive its listener."""
        with self._reload_lock:
            if self._live:
                self._value = self._load()

    def _set_live(self, live: bool) -> None:
        with self._reload_lock:
            self._live = live
            self._value = None

    def _listen(self, listening: threading.Event) -> None:
        """LISTEN, load, then reload on every notice; on a failure, drop the value (`get` reads)
        and connect again."""
        while not self._stopping.is_set():
            conn = None
            try:
                conn = self._connect()
                conn.execute(f"LISTEN {self._channel}")  # a fixed name of the store, not input
                self._set_live(True)
                self._reload()  # after LISTEN: no change falls between the two
                listening.set()
                while not self._stopping.is_set():
                    for _notice in conn.notifies(timeout=_WAKE_SECONDS, stop_after=1):
                        self._reload()
            except Exception:  # any failure: read on every call, and try again
                self._set_live(False)
                log.warning("%s: listening failed; reading on every request until it works", self._channel,
                            exc_info=True)  # fmt: skip
                self._stopping.wait(_RELISTEN_SECONDS)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()

    def close(self) -> None:
        self._stopping.set()
        if self._listener is not None:
            self._listener.join(timeout=_RELISTEN_SECONDS + _WAKE_SECONDS + 1)
