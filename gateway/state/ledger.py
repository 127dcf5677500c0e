"""The ledger's rules, whichever database holds them (`ledger_sqlite`, `ledger_postgres`):
group commits of admissions and other jobs, binding the pseudonym secret, pruning.

Admissions are applied in transactions that hold the ledger's write lock (a batch at a time:
one read of every row the batch may touch, each admission decided in order against what the
earlier ones counted, one write per table), so every process sees one ledger and a limit holds
exactly: each check and its increment happen together or not at all. A request that trips any
limit changes nothing but the refusal count that alerts are raised from.

SECURITY: entity keys, fields and supplied values arrive only as pseudonyms (keyed hashes made
by the caller); answers are stored so that a repeated claim gets the same answer without being
counted again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any

from gateway.errors import ConfigurationError, DependencyError
from gateway.state.group_commit import GroupCommitter, Settle, Waiter, resolve
from gateway.state.ledger_admission import ALERTS_KEPT_DAYS, DAY, Admit, Outcome, decide, note_refusal, wanted_by
from gateway.state.ledger_reads import LedgerReads, ReadRows
from gateway.state.ledger_tables import Db, insert_alert, read_exact
from gateway.state.ports import Admission, VerificationRequest

PRUNE_EVERY_SECONDS = 60.0
BATCH_LIMIT = 256

Job = tuple[Callable[[Db], Any] | Admit, Waiter]
UNAVAILABLE = "the ledger is unavailable; nothing was released"


def fail_batch(batch: list[Job], cause: BaseException) -> None:
    """Nothing of the batch is durable: every caller learns it."""
    for _job, waiter in batch:
        failure = DependencyError(UNAVAILABLE)
        failure.__cause__ = cause
        resolve(waiter, None, failure)


class LedgerRules(LedgerReads):
    """The rules, whichever database holds them (`SqliteLedger`, `PostgresLedger`).

    Admissions run in group commits: whatever is waiting goes into one transaction that holds
    the ledger's write lock, then one COMMIT, and every caller learns its outcome. Admissions in
    a batch are decided in order, each seeing the ones before it, and a refused one writes
    nothing but its refusal count. Blocking callers go through a writer thread; the request
    path calls `admit_verification_async`.
    """

    _join = "JOIN"
    """How the exact-key read joins its VALUES list to a table (`exact_sql`)."""

    def __init__(self, writer: GroupCommitter[Job, Any], rows: ReadRows) -> None:
        """`rows`: a read outside the writer (reports, alerts), on the backend's own connection."""
        self._writer = writer
        self._rows = rows
        self._pruned_at = time.monotonic()

    # -- the writer --------------------------------------------------------------------------

    def _submit(self, job: Callable[[Db], Any] | Admit) -> Future[Any]:
        future: Future[Any] = Future()
        self._writer.put((job, future))
        return future

    def _run(self, job: Callable[[Db], Any]) -> Any:
        return self._submit(job).result()

    def _apply(self, conn: Db, batch: list[Job]) -> Settle:
        """A batch in one transaction; the outcomes reach the callers only once the COMMIT is durable.

        Admissions are decided together: one read of every row they may touch, each decided in
        order against what the earlier ones changed, then one write per table. Nothing is
        written for a refused one (the limits are checked before anything is counted) but its
        refusal count. Other jobs run first, each in its own savepoint.
        """
        outcomes: list[Outcome] = []
        admissions: list[tuple[Admit, Waiter]] = []
        for job, waiter in batch:
            if isinstance(job, Admit):
                admissions.append((job, waiter))
                continue
            conn.execute("SAVEPOINT job")
            try:
                outcomes.append((waiter, job(conn), None))
            except Exception as exc:  # this job only: undo it, keep the batch
                conn.execute("ROLLBACK TO job")
                outcomes.append((waiter, None, exc))
            conn.execute("RELEASE job")
        if admissions:
            rows = read_exact(conn, wanted_by(admissions), self._join)
            decided, writes, refusals = decide(admissions, rows)
            outcomes += decided
            writes.write(conn)
            for refused, now in refusals:
                note_refusal(conn, refused, now)
        return self._settle(batch, outcomes)

    def _settle(self, batch: list[Job], outcomes: list[Outcome], after: Callable[[], None] = lambda: None) -> Settle:
        """How a batch ends: its callers learn their outcomes once the COMMIT is durable (then
        `after` runs), or all learn that nothing of it is."""

        def settle(error: BaseException | None) -> None:
            if error is not None:
                fail_batch(batch, error)
                return
            for waiter, result, refused in outcomes:
                resolve(waiter, result, refused)
            after()
            self.prune_when_due()

        return settle

    def prune_when_due(self) -> None:
        """After a durable batch: drop ended windows, at most once every PRUNE_EVERY_SECONDS."""
        if time.monotonic() - self._pruned_at >= PRUNE_EVERY_SECONDS:
            self._pruned_at = time.monotonic()
            self._submit(lambda conn: self._delete_ended(conn, time.time()))

    def close(self) -> None:
        self._writer.close()

    def bind_pseudonyms(self, key_id: str) -> None:
        """Refuse a ledger written with pseudonyms of another subject secret.

        Every key, question and claim reaches the ledger as a pseudonym. A process whose secret
        differs (a replica set up on its own) would make other pseudonyms for the same entity,
        and the distinct-key and probing limits would count each entity once per secret. The
        first process records which secret it uses (`AuditLog.pseudonym_key_id`); the others
        must match it.
        """

        def bind(conn: Db) -> str:
            conn.execute("INSERT INTO meta VALUES ('pseudonym_key', ?) ON CONFLICT DO NOTHING", (key_id,))
            (bound,) = conn.execute("SELECT value FROM meta WHERE name = 'pseudonym_key'").fetchone()
            return str(bound)

        bound = self._run(bind)
        if bound != key_id:
            raise ConfigurationError(
                "this gateway's subject secret (state/audit/subject.key) is not the one the ledger was written "
                "with: copy it from the gateway that first used this ledger, or the verification limits "
                "would count every entity once per secret"
            )

    # -- admissions --------------------------------------------------------------------------

    def admit_verification(self, request: VerificationRequest, *, now: float) -> Admission:
        """Check every limit and count this request and its new claims, atomically.

        Raises RateLimited (with Retry-After) naming the first limit that trips; then nothing
        is counted. Repeated claims (same fingerprint in the probe window) get their stored
        answer and are not counted again.
        """
        admission: Admission = self._submit(Admit(request, now)).result()
        return admission

    async def admit_verification_async(self, request: VerificationRequest, *, now: float) -> Admission:
        """The same from the event loop, without blocking it."""
        admission: Admission = await asyncio.wrap_future(self._submit(Admit(request, now)))
        return admission

    def raise_alert(self, kind: str, subject: str, message: str) -> None:
        """Record an alert for administrators (a failed policy reload, say), and log it."""
        self._run(lambda conn: insert_alert(conn, kind, subject, message, None))

    def prune(self, now: float) -> None:
        """Drop rows whose window ended; billing is kept."""
        self._run(lambda conn: self._delete_ended(conn, now))

    @staticmethod
    def _delete_ended(conn: Db, now: float) -> None:
        for table in ("counters", "members", "answers"):
            conn.execute(f"DELETE FROM {table} WHERE until < ?", (now,))  # noqa: S608 - fixed table names
        kept_since = datetime.fromtimestamp(now - ALERTS_KEPT_DAYS * DAY, UTC).isoformat(timespec="seconds")
        conn.execute("DELETE FROM alerts WHERE at < ?", (kept_since,))
