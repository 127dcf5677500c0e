"""The audit log in PostgreSQL, for gateway replicas on several machines."""

from __future__ import annotations

import os
from pathlib import Path

from gateway.domain.trail import AuditEvent
from gateway.errors import AuditUnavailable
from gateway.state import postgres_connections, postgres_reader
from gateway.state.audit import (
    BATCH_LIMIT,
    INSERT_SQL,
    NEXT_SEQ_SQL,
    UNAVAILABLE,
    Append,
    AuditLogRules,
    fail_batch,
    numbered,
    settle_batch,
)
from gateway.state.audit_sqlite import DB_FILE, STORE
from gateway.state.group_commit import Settle, written
from gateway.state.migrations import Step

_PG_FIRST = (
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
PG_STEPS = (Step(1, _PG_FIRST),)
"""As `audit_sqlite.SQLITE_STEPS`, on PostgreSQL."""
TABLES: postgres_connections.Tables = (
    ("leaves", ("seq", "record", "hash")),
    ("checkpoints", ("size", "root", "time", "jws")),
)
"""What an installation's trail holds, for `PostgresAuditLog.import_from`."""
PG_LOCK = 0x7667617564697400
"""The advisory lock every PostgreSQL append batch holds: leaves are numbered one batch at a time."""


class PostgresAuditLog(AuditLogRules):
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
        self._read = postgres_reader.Reader(dsn, schema, name="veilgate-audit", unavailable=UNAVAILABLE)
        try:
            self._read.migrate(STORE, PG_STEPS)
        except BaseException:
            self._read.close()
            raise
        writer, self._loop_writer = postgres_connections.committers(
            dsn, schema, name="veilgate-audit", unavailable=UNAVAILABLE, lock=PG_LOCK,
            apply=self._apply, apply_on_loop=self._append_on_loop, fail=fail_batch, limit=BATCH_LIMIT,
        )  # fmt: skip
        super().__init__(key_directory, writer, self._read.rows, self._read.write)

    async def append_async(self, event: AuditEvent) -> int:
        """Numbered and written on the loop (`AsyncCommitter`)."""
        if self._closed:
            raise AuditUnavailable("the audit log is closed")
        seq: int = await written(event, self._loop_writer, self._writer)
        return seq

    @staticmethod
    async def _append_on_loop(conn: postgres_connections.AsyncDb, batch: list[Append]) -> Settle:
        """`_apply`, awaited."""
        ((next_seq,),) = await conn.rows(NEXT_SEQ_SQL)
        await conn.insert_many(INSERT_SQL, numbered(batch, next_seq))
        return settle_batch(batch, next_seq)

    def import_from(self, directory: Path) -> int | None:
        """Copy an installation's SQLite log here, byte for byte, if this one is empty (else None).
        The tree is the same tree: old receipts' leaves and checkpoints still prove."""
        with self._read.transaction() as db:
            db.execute("SELECT pg_advisory_xact_lock(?)", (PG_LOCK,))  # with the batches of every replica
            if not postgres_connections.is_empty(db, TABLES):
                return None
            return postgres_connections.copy_tables(db, directory / DB_FILE, TABLES)

    def close(self) -> None:
        self._closed = True
        self._loop_writer.close()
        super().close()
        self._read.close()
