"""The audit log: an append-only table of leaves, a Merkle tree over them, checkpoints.

Imports no other leaf: checkpoints arrive already signed (the trust-core service signs them).
Two backends under one set of rules (`AuditLog`): a SQLite file for the processes of one machine
(`SqliteAuditLog`), or PostgreSQL for replicas on several machines (`PostgresAuditLog`).

Durability: `append` (and `append_async`, its form for the event loop) resolves only after the
leaf's transaction has committed (SQLite: `synchronous=FULL` in WAL mode), so a record whose
response left is on disk even if the process is killed the next instant. Whatever is waiting
goes into a single transaction (`group_commit`), so under load many requests share one fsync.

Order: the writer takes the log's write lock (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: an advisory
lock) and numbers leaves after the largest stored `seq`, so every writer appends in one total
order. The tree is rebuilt incrementally from the table (`_sync`), never from what this process
believes it wrote.

SECURITY: keys of persons and enterprises go in only as `pseudonym()`s, an HMAC-SHA256 under
a secret kept in the log's directory, so the log can show that the same key was asked about
again without showing the key.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway import postgres_db
from gateway.atomic_files import check_secret_file, create_secret_file
from gateway.domain import merkle
from gateway.domain.trail import AuditEvent, AuditLeaf, Checkpoint, Decision
from gateway.errors import AuditUnavailable
from gateway.group_commit import GroupCommitter, Settle, Waiter, resolve, sqlite_committers, written

_DB_FILE = "log.sqlite3"
_SUBJECT_KEY_FILE = "subject.key"
_BATCH_LIMIT = 512

_SCHEMA = """
CREATE TABLE IF NOT EXISTS leaves (
    seq INTEGER PRIMARY KEY,
    record TEXT NOT NULL,
    hash BLOB NOT NULL,
    time TEXT GENERATED ALWAYS AS (json_extract(record, '$.time')) VIRTUAL,
    principal TEXT GENERATED ALWAYS AS (json_extract(record, '$.principal')) VIRTUAL,
    service TEXT GENERATED ALWAYS AS (json_extract(record, '$.service')) VIRTUAL,
    dataset TEXT GENERATED ALWAYS AS (json_extract(record, '$.dataset')) VIRTUAL,
    decision TEXT GENERATED ALWAYS AS (json_extract(record, '$.decision')) VIRTUAL
);
CREATE INDEX IF NOT EXISTS leaves_time ON leaves(time);
CREATE INDEX IF NOT EXISTS leaves_principal ON leaves(principal, seq);
CREATE INDEX IF NOT EXISTS leaves_service ON leaves(service, seq);
CREATE INDEX IF NOT EXISTS leaves_dataset ON leaves(dataset, seq);
CREATE TABLE IF NOT EXISTS checkpoints (
    size INTEGER PRIMARY KEY,
    root TEXT NOT NULL,
    time TEXT NOT NULL,
    jws TEXT NOT NULL
);
"""


_PG_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS leaves (
        seq BIGINT PRIMARY KEY,
        record TEXT NOT NULL,
        hash BYTEA NOT NULL,
        time TEXT GENERATED ALWAYS AS ((record::jsonb) ->> 'time') STORED,
        principal TEXT GENERATED ALWAYS AS ((record::jsonb) ->> 'principal') STORED,
        service TEXT GENERATED ALWAYS AS ((record::jsonb) ->> 'service') STORED,
        dataset TEXT GENERATED ALWAYS AS ((record::jsonb) ->> 'dataset') STORED,
        decision TEXT GENERATED ALWAYS AS ((record::jsonb) ->> 'decision') STORED)""",
    "CREATE INDEX IF NOT EXISTS leaves_time ON leaves(time)",
    "CREATE INDEX IF NOT EXISTS leaves_principal ON leaves(principal, seq)",
    "CREATE INDEX IF NOT EXISTS leaves_service ON leaves(service, seq)",
    "CREATE INDEX IF NOT EXISTS leaves_dataset ON leaves(dataset, seq)",
    """CREATE TABLE IF NOT EXISTS checkpoints (
        size BIGINT PRIMARY KEY, root TEXT NOT NULL, time TEXT NOT NULL, jws TEXT NOT NULL)""",
)
_TABLES: postgres_db.Tables = (
    ("leaves", ("seq", "record", "hash")),
    ("checkpoints", ("size", "root", "time", "jws")),
)
"""What an installation's trail holds, for `PostgresAuditLog.import_from`."""
_PG_LOCK = 0x7667617564697400
"""The advisory lock every PostgreSQL append batch holds: leaves are numbered one batch at a time."""
_UNAVAILABLE = "the audit log cannot be written; nothing was released"

_Append = tuple[AuditEvent, Waiter]
_NEXT_SEQ_SQL = "SELECT COALESCE(MAX(seq) + 1, 0) FROM leaves"
_INSERT_SQL = "INSERT INTO leaves (seq, record, hash) VALUES (?, ?, ?)"


def _numbered(batch: list[_Append], next_seq: int) -> list[tuple[int, str, bytes]]:
    """The batch's rows, numbered from `next_seq`: (seq, record, leaf hash)."""
    rows = []
    for offset, (event, _waiter) in enumerate(batch):
        record = AuditLeaf.of(event, next_seq + offset).encode()
        rows.append((next_seq + offset, record.decode(), merkle.leaf_hash(record)))
    return rows


def _settle(batch: list[_Append], next_seq: int) -> Settle:
    """Once the COMMIT ends, each caller learns its leaf's `seq`, or that nothing is durable."""

    def settle(error: BaseException | None) -> None:
        if error is not None:
            _fail(batch, error)
            return
        for offset, (_event, waiter) in enumerate(batch):
            resolve(waiter, next_seq + offset, None)

    return settle


def _fail(batch: list[_Append], cause: BaseException) -> None:
    """Every waiter learns that its leaf is not durable."""
    for _event, waiter in batch:
        failure = AuditUnavailable(_UNAVAILABLE)
        failure.__cause__ = cause
        resolve(waiter, None, failure)


@dataclass(frozen=True, slots=True)
class StoredLeaf:
    """A row as stored, unparsed: what `veilgate audit verify` checks."""

    seq: int
    record: bytes
    hash: bytes


@dataclass(frozen=True, slots=True)
class LeafFilter:
    since: str | None = None
    until: str | None = None
    principal: str | None = None
    service: str | None = None
    dataset: str | None = None
    decision: Decision | None = None


def _connect(path: Path, busy_timeout_seconds: float = 30.0) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=busy_timeout_seconds, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_seconds * 1000)}")  # an int, not input
    conn.execute("PRAGMA synchronous = FULL")
    return conn


class AuditLog:
    """The log's rules, whichever database holds its table (`SqliteAuditLog`, `PostgresAuditLog`).

    Appends go through a writer thread in group commits (`append`); the event loop calls
    `append_async`. The subject secret is a file in the log's directory on either backend.
    """

    _subjects_sql = (
        "SELECT record FROM leaves WHERE EXISTS "
        "(SELECT 1 FROM json_each(record, '$.subjects') WHERE value = ?) ORDER BY seq LIMIT ?"
    )

    def __init__(self, key_directory: Path, writer: GroupCommitter[_Append, Any]) -> None:
        self._subject_key = _load_or_create_secret(key_directory / _SUBJECT_KEY_FILE)
        self._tree = merkle.MerkleTree()
        self._tree_lock = threading.Lock()
        self._writer = writer
        self._closed = False

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:  # pragma: no cover
        """A read outside the writer: each backend has its own connection."""
        raise NotImplementedError

    def _write_one(self, sql: str, params: Sequence[Any]) -> int:  # pragma: no cover
        """One statement outside the writer, committed; how many rows it changed."""
        raise NotImplementedError

    def pseudonym(self, kind: str, key: str) -> str:
        """A keyed hash of an entity key: equal keys give equal pseudonyms, nothing gives the key."""
        mac = hmac.digest(self._subject_key, f"{kind}\x00{key}".encode(), "sha256")  # one call, in C
        return f"{kind}:{mac.hex()[:32]}"

    def pseudonym_key_id(self) -> str:
        """Names the subject secret without revealing it: equal for equal secrets, so that stores
        shared by several machines can tell that each of them makes the same pseudonyms."""
        return self.pseudonym("key-id", "veilgate")

    # -- appending ---------------------------------------------------------------------------

    def append(self, event: AuditEvent) -> Future[int]:
        """Queue `event`; the future gives its `seq` once the leaf is durable."""
        if self._closed:
            raise AuditUnavailable("the audit log is closed")
        future: Future[int] = Future()
        self._writer.put((event, future))
        return future

    def append_now(self, event: AuditEvent) -> int:
        return self.append(event).result()

    async def append_async(self, event: AuditEvent) -> int:
        """`append` from the event loop, without blocking it."""
        return await asyncio.wrap_future(self.append(event))

    @staticmethod
    def _apply(conn: Any, batch: list[_Append]) -> Settle:
        """Number the batch after the largest stored `seq` (whoever wrote it) and insert it."""
        (next_seq,) = conn.execute(_NEXT_SEQ_SQL).fetchone()
        conn.executemany(_INSERT_SQL, _numbered(batch, next_seq))
        return _settle(batch, next_seq)

    # -- reading -----------------------------------------------------------------------------

    def _sync(self) -> merkle.MerkleTree:
        """Bring the in-memory tree up to the table, whoever appended."""
        with self._tree_lock:
            rows = self._rows("SELECT seq, hash FROM leaves WHERE seq >= ? ORDER BY seq", (self._tree.size,))
            for seq, leaf in rows:
                if seq != self._tree.size:
                    raise AuditUnavailable("the audit log has a gap; run `veilgate audit verify`")
                self._tree.append(bytes(leaf))
            return self._tree

    def size(self) -> int:
        return self._sync().size

    def root(self, size: int) -> bytes:
        tree = self._sync()
        with self._tree_lock:
            return tree.root(size)

    def inclusion_proof(self, index: int, size: int) -> tuple[bytes, list[bytes]]:
        """The leaf hash at `index` and its audit path in the tree of `size` leaves."""
        tree = self._sync()
        with self._tree_lock:
            proof = tree.inclusion_proof(index, size)
            return tree.leaf(index), proof

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        tree = self._sync()
        with self._tree_lock:
            return tree.consistency_proof(first, second)

    def leaf(self, seq: int) -> AuditLeaf | None:
        rows = self._rows("SELECT record FROM leaves WHERE seq = ?", (seq,))
        return AuditLeaf.model_validate_json(rows[0][0]) if rows else None

    def find(self, where: LeafFilter, *, after: int = -1, limit: int = 100) -> list[AuditLeaf]:
        """Leaves matching `where` with `seq > after`, oldest first."""
        clauses: list[str] = ["seq > ?"]
        params: list[object] = [after]
        for column, value in (
            ("principal", where.principal),
            ("service", where.service),
            ("dataset", where.dataset),
            ("decision", where.decision.value if where.decision else None),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if where.since is not None:
            clauses.append("time >= ?")
            params.append(where.since)
        if where.until is not None:
            clauses.append("time < ?")
            params.append(where.until)
        # SECURITY: column names are the fixed literals above; every value is a placeholder.
        sql = f"SELECT record FROM leaves WHERE {' AND '.join(clauses)} ORDER BY seq LIMIT ?"  # noqa: S608
        rows = self._rows(sql, (*params, limit))
        return [AuditLeaf.model_validate_json(r[0]) for r in rows]

    def find_subject(self, pseudonym: str, *, limit: int = 10_000) -> list[AuditLeaf]:
        """Leaves whose subjects include `pseudonym`: who asked about one entity, when."""
        rows = self._rows(self._subjects_sql, (pseudonym, limit))
        return [AuditLeaf.model_validate_json(r[0]) for r in rows]

    def stored(self, *, batch: int = 10_000) -> Iterator[StoredLeaf]:
        """Every row in `seq` order, as stored, for verification and export (a page at a time)."""
        last = -1
        while True:
            rows = self._rows("SELECT seq, record, hash FROM leaves WHERE seq > ? ORDER BY seq LIMIT ?", (last, batch))
            if not rows:
                return
            for seq, record, leaf in rows:
                yield StoredLeaf(seq, str(record).encode(), bytes(leaf))
            last = rows[-1][0]

    # -- checkpoints -------------------------------------------------------------------------

    def add_checkpoint(self, checkpoint: Checkpoint) -> bool:
        """Store a signed tree head; False if one of that size exists (another replica made it)."""
        changed = self._write_one(
            "INSERT INTO checkpoints (size, root, time, jws) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (checkpoint.size, checkpoint.root, checkpoint.time, checkpoint.jws),
        )
        return changed == 1

    def checkpoints(self, *, after_size: int = -1, limit: int = 1000) -> list[Checkpoint]:
        rows = self._rows(
            "SELECT size, root, time, jws FROM checkpoints WHERE size > ? ORDER BY size LIMIT ?", (after_size, limit)
        )
        return [Checkpoint(size=s, root=r, time=t, jws=j) for s, r, t, j in rows]

    def latest_checkpoint(self) -> Checkpoint | None:
        rows = self._rows("SELECT size, root, time, jws FROM checkpoints ORDER BY size DESC LIMIT 1")
        return Checkpoint(size=rows[0][0], root=rows[0][1], time=rows[0][2], jws=rows[0][3]) if rows else None

    def close(self) -> None:
        """Let queued leaves commit, then stop the writer."""
        self._closed = True
        self._writer.close()


class SqliteAuditLog(AuditLog):
    """One SQLite file in WAL mode, shared by the processes of one machine (BEGIN IMMEDIATE
    orders them). The request path writes from the event loop, with only the COMMIT in a thread
    (`group_commit.LoopCommitter`)."""

    def __init__(self, directory: Path, *, busy_timeout_seconds: float = 30.0) -> None:
        self._path = directory / _DB_FILE
        self._read = _connect(self._path)
        self._read_lock = threading.Lock()
        writer, self._loop_writer = sqlite_committers(
            "audit",
            lambda wait: _connect(self._path, busy_timeout_seconds if wait else 0.0),
            self._apply,
            limit=_BATCH_LIMIT,
            fail=_fail,
            busy_timeout_seconds=busy_timeout_seconds,
        )
        super().__init__(directory, writer)

    @classmethod
    def open(cls, directory: Path, *, busy_timeout_seconds: float = 30.0) -> SqliteAuditLog:
        """Open the log in `directory`, creating it (owner-only) on first use.

        `busy_timeout_seconds`: how long an append waits for another process's write lock
        before it fails (and its request with it).
        """
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        path = directory / _DB_FILE
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        try:
            conn = _connect(path)
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.executescript(_SCHEMA)
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise AuditUnavailable(f"the audit log cannot be opened ({exc}); see docs/operations.md") from exc
        return cls(directory, busy_timeout_seconds=busy_timeout_seconds)

    @property
    def path(self) -> Path:
        return self._path

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._read_lock:
            rows: list[tuple[Any, ...]] = self._read.execute(sql, params).fetchall()
            return rows

    def _write_one(self, sql: str, params: Sequence[Any]) -> int:
        with self._read_lock:
            return self._read.execute(sql, params).rowcount

    async def append_async(self, event: AuditEvent) -> int:
        """Written on the loop, committed by a thread (LoopCommitter)."""
        if self._closed:
            raise AuditUnavailable("the audit log is closed")
        seq: int = await written(event, self._loop_writer, self._writer)
        return seq

    def close(self) -> None:
        self._closed = True
        self._loop_writer.close()
        super().close()
        with self._read_lock:
            self._read.close()


class PostgresAuditLog(AuditLog):
    """PostgreSQL, for gateway replicas on several machines: one log, one Merkle tree, one order.
    Each append batch holds one advisory lock, so leaves are numbered one batch at a time, as
    SQLite's BEGIN IMMEDIATE does on one machine. The subject secret stays a file under
    `key_directory`, which every replica must share (the ledger checks it)."""

    _subjects_sql = (
        "SELECT record FROM leaves WHERE (record::jsonb) -> 'subjects' @> jsonb_build_array(CAST(? AS TEXT)) "
        "ORDER BY seq LIMIT ?"
    )

    def __init__(self, dsn: str, *, schema: str, key_directory: Path) -> None:
        key_directory.mkdir(parents=True, exist_ok=True)
        os.chmod(key_directory, 0o700)
        self._read = postgres_db.Reader(dsn, schema, name="veilgate-audit", unavailable=_UNAVAILABLE)
        self._read.create_tables("veilgate_audit", _PG_SCHEMA)
        writer, self._loop_writer = postgres_db.committers(
            dsn, schema, name="veilgate-audit", unavailable=_UNAVAILABLE, lock=_PG_LOCK,
            apply=self._apply, apply_on_loop=self._append_on_loop, fail=_fail, limit=_BATCH_LIMIT,
        )  # fmt: skip
        super().__init__(key_directory, writer)

    async def append_async(self, event: AuditEvent) -> int:
        """Numbered and written on the loop (`AsyncCommitter`)."""
        if self._closed:
            raise AuditUnavailable("the audit log is closed")
        seq: int = await written(event, self._loop_writer, self._writer)
        return seq

    @staticmethod
    async def _append_on_loop(conn: postgres_db.AsyncDb, batch: list[_Append]) -> Settle:
        """`_apply`, awaited."""
        ((next_seq,),) = await conn.rows(_NEXT_SEQ_SQL)
        await conn.executemany(_INSERT_SQL, _numbered(batch, next_seq))
        return _settle(batch, next_seq)

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._read.rows(sql, params)

    def _write_one(self, sql: str, params: Sequence[Any]) -> int:
        return self._read.write(sql, params)

    def import_from(self, directory: Path) -> int | None:
        """Copy an installation's SQLite log here, byte for byte, if this one is empty (else None).
        The tree is the same tree: old receipts' leaves and checkpoints still prove."""
        with self._read.transaction() as db:
            db.execute("SELECT pg_advisory_xact_lock(?)", (_PG_LOCK,))  # with the batches of every replica
            if not postgres_db.is_empty(db, _TABLES):
                return None
            return postgres_db.copy_tables(db, directory / _DB_FILE, _TABLES)

    def close(self) -> None:
        self._closed = True
        self._loop_writer.close()
        super().close()
        self._read.close()


def _load_or_create_secret(path: Path) -> bytes:
    if not path.exists():
        create_secret_file(path, secrets.token_bytes(32))
    check_secret_file(path)
    return path.read_bytes()


def open_log(directory: Path, *, dsn: str | None = None, schema: str = "veilgate") -> AuditLog:
    """The log as configured: on PostgreSQL when `dsn` is set (its subject secret still under
    `directory`), else the SQLite file under `directory`."""
    if dsn:
        return PostgresAuditLog(dsn, schema=schema, key_directory=directory)
    return SqliteAuditLog.open(directory)
