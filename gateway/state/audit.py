"""The audit log: an append-only table of leaves, a Merkle tree over them, checkpoints.

Checkpoints arrive already signed (the trust-core service signs them). The rules
(`AuditLogRules`) are written once; `audit_sqlite` (a SQLite file for the processes of one
machine) and `audit_postgres` (PostgreSQL for replicas on several machines) hold the table.

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
import secrets
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Protocol

from gateway.atomic_files import check_secret_file, create_secret_file
from gateway.domain import merkle
from gateway.domain.trail import AuditEvent, AuditLeaf, Checkpoint, LeafText
from gateway.errors import AuditUnavailable
from gateway.state.group_commit import GroupCommitter, Settle, Waiter, resolve
from gateway.state.ledger_reads import ReadRows
from gateway.state.ports import LeafFilter, StoredLeaf

_SUBJECT_KEY_FILE = "subject.key"
BATCH_LIMIT = 512
UNAVAILABLE = "the audit log cannot be written; nothing was released"

Append = tuple[AuditEvent, Waiter]
NEXT_SEQ_SQL = "SELECT COALESCE(MAX(seq) + 1, 0) FROM leaves"
INSERT_SQL = "INSERT INTO leaves (seq, record, hash) VALUES (?, ?, ?)"


def numbered(batch: Sequence[tuple[AuditEvent | LeafText, Waiter]], next_seq: int) -> list[tuple[int, str, bytes]]:
    """The batch's rows, numbered from `next_seq`: (seq, record, leaf hash). Leaves may come
    encoded already (`LeafText`): numbering them is then all that is left."""
    rows = []
    for seq, (leaf, _waiter) in enumerate(batch, next_seq):
        record = leaf.at(seq) if isinstance(leaf, LeafText) else AuditLeaf.encode_at(leaf, seq)
        rows.append((seq, record.decode(), merkle.leaf_hash(record)))
    return rows


def settle_batch(batch: list[Append], next_seq: int) -> Settle:
    """Once the COMMIT ends, each caller learns its leaf's `seq`, or that nothing is durable."""

    def settle(error: BaseException | None) -> None:
        if error is not None:
            fail_batch(batch, error)
            return
        for offset, (_event, waiter) in enumerate(batch):
            resolve(waiter, next_seq + offset, None)

    return settle


def fail_batch(batch: list[Append], cause: BaseException) -> None:
    """Every waiter learns that its leaf is not durable."""
    for _event, waiter in batch:
        failure = AuditUnavailable(UNAVAILABLE)
        failure.__cause__ = cause
        resolve(waiter, None, failure)


class WriteOne(Protocol):
    def __call__(self, sql: str, params: Sequence[Any], /) -> int: ...


class AuditLogRules:
    """The log's rules, whichever database holds its table (`audit_sqlite`, `audit_postgres`).

    Appends go through a writer thread in group commits (`append`); the event loop calls
    `append_async`. The subject secret is a file in the log's directory on either backend.
    """

    _subjects_sql = (
        "SELECT record FROM leaves WHERE EXISTS "
        "(SELECT 1 FROM json_each(record, '$.subjects') WHERE value = ?) ORDER BY seq LIMIT ?"
    )

    def __init__(
        self, key_directory: Path, writer: GroupCommitter[Append, Any], rows: ReadRows, write_one: WriteOne
    ) -> None:
        """`rows`: a read outside the writer; `write_one`: one statement outside it, committed,
        giving how many rows it changed (each backend on its own connection)."""
        self._subject_key = _load_or_create_secret(key_directory / _SUBJECT_KEY_FILE)
        self._tree = merkle.MerkleTree()
        self._tree_lock = threading.Lock()
        self._writer = writer
        self._rows = rows
        self._write_one = write_one
        self._closed = False

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
    def _apply(conn: Any, batch: list[Append]) -> Settle:
        """Number the batch after the largest stored `seq` (whoever wrote it) and insert it."""
        (next_seq,) = conn.execute(NEXT_SEQ_SQL).fetchone()
        conn.executemany(INSERT_SQL, numbered(batch, next_seq))
        return settle_batch(batch, next_seq)

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


def _load_or_create_secret(path: Path) -> bytes:
    if not path.exists():
        create_secret_file(path, secrets.token_bytes(32))
    check_secret_file(path)
    return path.read_bytes()
