"""PostgreSQL for the stores that replicas on several machines share: the ledgers, the audit log,
the freezes, the jobs and the client accounts.

The stores keep one set of SQL, written with SQLite's `?` placeholders; `Db` runs it on a psycopg
connection. Connections are named (`application_name`) and live in the deployment's schema.
A process holds few: the stores read rarely share one (`postgres_reader.Reader.shared`), the
values kept in memory share one listener (`postgres_watched.Watched`), the ledger and the audit
log each write through `committers`, and the budget ledger takes a `Pool`. psycopg is imported
only in this package and only when a DSN is configured: installations on SQLite need no driver.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from gateway.errors import ConfigurationError, DependencyError
from gateway.state.group_commit import GroupCommitter, Settle
from gateway.state.group_commit_async import AsyncCommitter
from gateway.state.sqlite_connections import open_read_only

if TYPE_CHECKING:  # the driver is optional at run time
    from psycopg import AsyncConnection, Connection

    PgConnection = Connection[tuple[Any, ...]]
    PgAsyncConnection = AsyncConnection[tuple[Any, ...]]


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

READ_COMMITTED = "SET default_transaction_isolation TO 'read committed'"
"""On every connection, whatever the server's default: a store's transaction takes its advisory
lock first and then reads, which sees what the batch before it committed only if each statement
takes its own snapshot. Under REPEATABLE READ the snapshot is taken by the lock's statement,
before it waits, and a batch would decide limits on rows as they were before the last commit."""

CUSTOM_PLANS = "SET plan_cache_mode TO force_custom_plan"
"""psycopg prepares a statement run five times, and PostgreSQL may then keep one generic plan for
it, made from the statistics of the moment: a ledger read planned while its tables were nearly
empty kept scanning them whole as they grew (scoring on one worker fell from about 3,000 to
1,600 requests a second within a minute). Each execution is planned for its own parameters;
the statement is still parsed once."""

POOL_TIMEOUT_SECONDS = 5.0
"""How long a pooled store waits for a connection before it answers 503."""


def _session(psycopg: ModuleType, schema: str) -> tuple[Any, ...]:
    """What every connection runs first, whichever way it is opened: its schema (created if
    missing) as the search path, READ_COMMITTED and CUSTOM_PLANS."""
    identifier = psycopg.sql.Identifier(schema)  # SECURITY: a quoted identifier, never text
    return (
        psycopg.sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(identifier),
        psycopg.sql.SQL("SET search_path TO {}").format(identifier),
        READ_COMMITTED,
        CUSTOM_PLANS,
    )


def connect(dsn: str, schema: str, *, name: str, unavailable: str) -> PgConnection:
    """An autocommit connection whose search path is `schema` (created if missing).

    `unavailable`: the message of the DependencyError raised when the server cannot be reached.
    """
    psycopg = driver()
    try:
        conn: PgConnection = psycopg.connect(dsn, autocommit=True, application_name=name, **KEEPALIVES)
        for statement in _session(psycopg, schema):
            conn.execute(statement)
    except psycopg.Error as exc:
        raise DependencyError(unavailable) from exc
    return conn


async def connect_async(dsn: str, schema: str, *, name: str, unavailable: str) -> AsyncDb:
    """`connect`, for the event loop (`group_commit_async.AsyncCommitter`)."""
    psycopg = driver()
    try:
        conn: PgAsyncConnection = await psycopg.AsyncConnection.connect(
            dsn, autocommit=True, application_name=name, cursor_factory=psycopg.AsyncRawCursor, **KEEPALIVES
        )
        for statement in _session(psycopg, schema):
            await conn.execute(statement)
        # Every int as int8: psycopg otherwise types each by its size (int2, int4, int8), and a
        # statement is prepared per text and types, so multi-row inserts were rarely prepared.
        conn.adapters.register_dumper(int, psycopg.types.numeric.Int8Dumper)
        conn.adapters.register_dumper(int, psycopg.types.numeric.Int8BinaryDumper)
        conn.prepared_max = PREPARED_MAX
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

        def configure(conn: PgConnection) -> None:
            for statement in _session(psycopg, schema):
                conn.execute(statement)

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


def advisory_lock_sql(*locks: int) -> str:
    """The statement that takes stores' transaction-level advisory locks: one statement for
    several, as each costs a batch a statement's work while it holds them. No deadlock can come
    of the order they are taken in: the one transaction that takes two (a release batch) always
    sends this same statement, and every other takes one. Sent in a pipeline before any
    parameter could be bound: the locks are the stores' integer constants."""
    if not locks:
        raise ValueError("advisory_lock_sql takes at least one lock")
    return "SELECT " + ", ".join(f"pg_advisory_xact_lock({int(lock)})" for lock in locks)  # integers, not input


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
    take_lock = advisory_lock_sql(lock)
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


_PLACEHOLDER_ROW = re.compile(r"\((\?, )*\?\)")
"""The one row of VALUES that `_multi_row` repeats: placeholders only (an expression in it, with
brackets of its own, is refused rather than cut in the wrong place)."""
_EXACT_ROWS = 16
"""Up to this many rows, `AsyncDb.insert_many` sends them in one statement of exactly that many."""
_MOST_ROWS = 64
"""Rows per statement of `AsyncDb.insert_many` at most (a power of two)."""
PREPARED_MAX = 256
"""Statements psycopg keeps prepared on a writer's connection (its default, 100, is less than the
texts a writer uses: each table's inserts of 1 to 16, 32 and 64 rows, and the ledger's reads)."""


def chunk_sizes(rows: int) -> Iterator[int]:
    """How `insert_many` cuts `rows`: all in one statement up to `_EXACT_ROWS`, else the largest
    power of two up to `_MOST_ROWS` first. Each statement costs the writer a send and the server
    a statement's work while the batch holds the stores' locks, and a batch's tables mostly get
    fewer than 16 rows: one statement each, where powers of two alone cut 7 rows into three."""
    while rows > 0:
        size = rows if rows <= _EXACT_ROWS else min(_MOST_ROWS, 1 << (rows.bit_length() - 1))
        yield size
        rows -= size


@functools.cache
def _multi_row(sql: str, rows: int) -> bytes:
    """`sql`, an INSERT with one `VALUES (?, ...)` row, with `rows` rows, in PostgreSQL's placeholders."""
    head, values, tail = sql.partition(" VALUES ")
    row = _PLACEHOLDER_ROW.match(tail)
    if not head.startswith("INSERT ") or row is None:
        raise ValueError("insert_many takes an INSERT ... VALUES (?, ...) statement of placeholders only")
    return _numbered(head + values + ", ".join([row.group()] * rows) + tail[row.end() :])


@functools.cache
def _numbered(sql: str) -> bytes:
    """`sql` with PostgreSQL's own placeholders (`$1`, `$2`, ...) for a raw cursor, which binds
    them as they are. psycopg parses its `%s` placeholders again in every statement of more than
    50 parameters (its cache of parsed statements stops there), and a batch's reads and
    multi-row inserts mostly have more: the parse took a sixth of a batch's time on the loop,
    all of it while the batch held the stores' locks. SQL with `$` or `%` is refused: the stores'
    statements have neither, and `Db` (psycopg's placeholders) would read a `%` otherwise."""
    if "$" in sql or "%" in sql:
        raise ValueError("the stores' SQL is written with ? placeholders only, without $ or %")
    parts = sql.split("?")
    return ("".join(f"{part}${n}" for n, part in enumerate(parts[:-1], 1)) + parts[-1]).encode()


class AsyncDb:
    """`Db` on the event loop: the same SQL, awaited (on a raw cursor: see `_numbered`)."""

    def __init__(self, conn: PgAsyncConnection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = (), /) -> Any:
        return await self._conn.execute(_numbered(sql), params)

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cursor = await self._conn.execute(_numbered(sql), params)
        found: list[tuple[Any, ...]] = await cursor.fetchall()
        return found

    async def insert_many(self, sql: str, rows: Sequence[Sequence[Any]], /) -> None:
        """`executemany` of an `INSERT ... VALUES (?, ...) [...]`, several rows per statement.

        PostgreSQL does a statement's work (bind, plan lookup, executor start) once per
        statement: a batch's rows go in the chunks of `chunk_sizes`, so a table takes one or a
        few statements a batch, not one a row, and a bounded set of texts is prepared."""
        start = 0
        for size in chunk_sizes(len(rows)):
            chunk = rows[start : start + size]
            await self._conn.execute(_multi_row(sql, size), [value for row in chunk for value in row])
            start += size

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
    with contextlib.closing(open_read_only(source)) as sqlite:
        for table, columns in tables:
            names = ", ".join(columns)
            # SECURITY: table and column names are the stores' own constants, never input.
            rows = sqlite.execute(f"SELECT {names} FROM {table}").fetchall()  # noqa: S608
            db.executemany(f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})", rows)  # noqa: S608
            copied += len(rows)
    return copied
