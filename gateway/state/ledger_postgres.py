"""The ledger in PostgreSQL, for gateway replicas on several machines: one ledger, so a limit
holds across all of them."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from gateway.errors import ConfigurationError
from gateway.state import postgres_connections, postgres_reader, sqlite_connections
from gateway.state.group_commit import Settle, Waiter, written
from gateway.state.ledger import BATCH_LIMIT, UNAVAILABLE, Job, LedgerRules, fail_batch
from gateway.state.ledger_admission import Admit, Outcome, decide, note_refusal, wanted_by
from gateway.state.ledger_tables import ALERT_SQL, PG_LOCK, PG_STEPS, STORE, TABLES, Rows, exact_reads
from gateway.state.ports import Admission, VerificationRequest

log = logging.getLogger("veilgate.ledger")


class PostgresLedger(LedgerRules):
    """PostgreSQL, for gateway replicas on several machines: one ledger, so a limit holds across
    all of them. Each batch holds one transaction-level advisory lock, as SQLite's BEGIN
    IMMEDIATE does: admissions of every replica are applied one batch at a time."""

    def __init__(self, dsn: str, *, schema: str = "public") -> None:
        self._read = postgres_reader.Reader(dsn, schema, name="veilgate-ledger", unavailable=UNAVAILABLE)
        try:
            self._read.migrate(STORE, PG_STEPS)
        except BaseException:
            self._read.close()
            raise
        writer, self._loop_writer = postgres_connections.committers(
            dsn, schema, name="veilgate-ledger", unavailable=UNAVAILABLE, lock=PG_LOCK,
            apply=self._apply_pipelined, apply_on_loop=self._admit_on_loop, fail=fail_batch, limit=BATCH_LIMIT,
        )  # fmt: skip
        super().__init__(writer, self._read.rows)

    async def admit_verification_async(self, request: VerificationRequest, *, now: float) -> Admission:
        """Decided and written on the loop (`AsyncCommitter`)."""
        admission: Admission = await written(Admit(request, now), self._loop_writer, self._writer)
        return admission

    async def _admit_on_loop(self, conn: postgres_connections.AsyncDb, batch: list[Job]) -> Settle:
        """`_apply` for a batch of admissions only, awaited: one read, the decisions, the writes.
        Refusal counts are noted by the writer thread after the COMMIT (they
        only feed alerts)."""
        admissions = [(job, waiter) for job, waiter in batch if isinstance(job, Admit)]
        outcomes, after = await self.admit_in(conn, admissions)
        return self._settle(batch, outcomes, after)

    async def admit_in(
        self, conn: postgres_connections.AsyncDb, admissions: list[tuple[Admit, Waiter]]
    ) -> tuple[list[Outcome], Callable[[], None]]:
        """Decide and write `admissions` in the caller's transaction, which holds the ledger's
        lock: the outcomes in order, and what to run once the COMMIT is durable."""
        rows = Rows()
        for sql, params in exact_reads(wanted_by(admissions), self._join):
            rows.add(await conn.rows(sql, params))
        outcomes, writes, refusals = decide(admissions, rows)
        for sql, values in writes.statements():  # sent with the COMMIT (the committer's pipeline)
            await conn.insert_many(sql, values)
        raised = []
        for kind, subject, message, dedupe in writes.alerts:
            at = datetime.now(UTC).isoformat(timespec="seconds")
            if await conn.rows(ALERT_SQL + " RETURNING id", (at, kind, subject, message, dedupe)):
                raised.append((kind, subject, message))

        def after_commit() -> None:  # logged once durable: a batch rolled back raised nothing
            for kind, subject, message in raised:
                log.warning("ALERT %s %s: %s", kind, subject, message)
            for refused, when in refusals:
                self._submit(functools.partial(note_refusal, refused=refused, now=when))

        return outcomes, after_commit

    def _apply_pipelined(self, conn: postgres_connections.Db, batch: list[Job]) -> Settle:
        """In pipeline mode: the batch's writes travel together to the COMMIT instead of waiting
        for a round trip each; its one read is its one other round trip."""
        with conn.pipeline():
            return self._apply(conn, batch)

    def import_from(self, source: Path) -> int | None:
        """Copy an installation's SQLite ledger here, if this one is empty (else None)."""
        with self._read.transaction() as db:
            db.execute("SELECT pg_advisory_xact_lock(?)", (PG_LOCK,))  # with the batches of every replica
            if not postgres_connections.is_empty(db, TABLES):
                return None
            with contextlib.closing(sqlite_connections.open_read_only(source)) as local:
                bound = local.execute("SELECT value FROM meta WHERE name = 'pseudonym_key'").fetchone()
            if bound is not None:
                db.execute("INSERT INTO meta VALUES ('pseudonym_key', ?) ON CONFLICT DO NOTHING", (bound[0],))
                (here,) = db.execute("SELECT value FROM meta WHERE name = 'pseudonym_key'").fetchone()
                if here != bound[0]:
                    raise ConfigurationError("this ledger was written with pseudonyms of another subject secret")
            return postgres_connections.copy_tables(db, source, TABLES)

    def close(self) -> None:
        self._loop_writer.close()
        super().close()
        self._read.close()
