"""A store's PostgreSQL connection for what is not written in group commits (`Reader`), and the
one connection that the stores of a process read rarely through share (`Reader.shared`)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from gateway.errors import DependencyError
from gateway.state import migrations
from gateway.state.postgres_connections import Db, connect, driver

if TYPE_CHECKING:
    from gateway.state.postgres_connections import PgConnection


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

    @classmethod
    def migrated(
        cls, dsn: str, schema: str, *, store: str, steps: Sequence[migrations.Step], unavailable: str
    ) -> Reader:
        """`shared`, with `store`'s tables brought up to date (`migrate`); closed again if that fails."""
        reader = cls.shared(dsn, schema, unavailable=unavailable)
        try:
            reader.migrate(store, steps)
        except BaseException:
            reader.close()
            raise
        return reader

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

    def migrate(self, store: str, steps: Sequence[migrations.Step]) -> list[int]:
        """Bring `store`'s tables up to date (`migrations.migrate`) in one transaction, under the
        lock that every replica's stores migrate under."""
        with self.transaction() as db:
            db.execute(migrations.POSTGRES_LOCK)
            return migrations.migrate(db.execute, store, steps)

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
