"""A release's admission and audit leaf (`ports.ReleaseStore`): one after the other on SQLite,
whose ledger and log are two files, and in one transaction on PostgreSQL (`PostgresReleases`),
where they are two tables of one database.

On PostgreSQL every durable step of a request batch costs a transaction: BEGIN, the store's
lock, its reads and writes, COMMIT, round trips to the server each, and a WAL flush. A release
took two (the ledger's, then the log's); together it takes one, and the locks of both stores
are taken in one order (the ledger's, then the log's), as no other transaction takes both.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any, TypeVar

from gateway.domain.trail import AuditEvent, LeafText
from gateway.errors import DependencyError
from gateway.state import postgres_connections
from gateway.state.audit import INSERT_SQL, NEXT_SEQ_SQL, numbered
from gateway.state.audit_postgres import PG_LOCK as AUDIT_LOCK
from gateway.state.group_commit import Settle, Waiter, resolve
from gateway.state.group_commit_async import AsyncCommitter
from gateway.state.ledger import BATCH_LIMIT
from gateway.state.ledger_admission import Admit, as_presumed, presumed
from gateway.state.ledger_postgres import PostgresLedger
from gateway.state.ledger_tables import PG_LOCK as LEDGER_LOCK
from gateway.state.ports import Admission, AuditLogStore, LedgerStore, VerificationRequest

Made = TypeVar("Made")
Build = Callable[[Admission], tuple[Any, AuditEvent]]
UNAVAILABLE = "the ledger or the audit log is unavailable; nothing was released"


class SequentialReleases:
    """The ledger's commit, then the log's: the leaf is built from the durable admission."""

    def __init__(self, ledger: LedgerStore, audit: AuditLogStore) -> None:
        self._ledger = ledger
        self._audit = audit

    async def admit_and_log(
        self, request: VerificationRequest, *, now: float, build: Callable[[Admission], tuple[Made, AuditEvent]]
    ) -> tuple[Admission, Made, int]:
        admission = await self._ledger.admit_verification_async(request, now=now)
        made, leaf = build(admission)
        return admission, made, await self._audit.append_async(leaf)

    def close(self) -> None:
        """The stores are the runtime's: closed with it."""


class Prebuilt:
    """A release built before the locks, on the admission presumed (`ledger_admission.presumed`),
    with its leaf encoded: under the locks, an admission as presumed only numbers the leaf."""

    __slots__ = ("build", "made", "presumption", "text")

    def __init__(self, build: Build, presumption: Admission) -> None:
        self.build = build
        self.presumption = presumption
        self.made, leaf = build(presumption)
        self.text = LeafText.of(leaf)

    def for_admission(self, admission: Admission) -> tuple[Any, LeafText]:
        """What the release is, as admitted: built again only if not as presumed."""
        if as_presumed(admission, self.presumption):
            return self.made, self.text
        made, leaf = self.build(admission)
        return made, LeafText.of(leaf)


Item = tuple[Admit, Prebuilt, Waiter]


class PostgresReleases:
    """Admissions and their leaves in one transaction per batch, on the event loop.

    A batch holds both stores' locks, which every replica's batches wait for: the admissions
    are decided in order against one read of the rows they touch (`PostgresLedger.admit_in`),
    each admitted one's leaf (built and encoded before the locks, see `Prebuilt`) is numbered
    after the largest stored `seq`, and one COMMIT makes all of it durable.
    A refused admission writes nothing here (its refusal count is noted after the COMMIT, its
    leaf is the request middleware's). A batch that fails, a leaf that cannot be built
    included, leaves neither charges nor leaves. A request whose caller left while its batch was
    written is charged and has its leaf, as one whose answer was lost in transit.
    From another event loop than the one this is bound to, the sequential path is taken.
    """

    def __init__(self, dsn: str, schema: str, ledger: PostgresLedger, audit: AuditLogStore) -> None:
        self._ledger = ledger
        self._sequential = SequentialReleases(ledger, audit)
        locks = (postgres_connections.advisory_lock_sql(LEDGER_LOCK, AUDIT_LOCK),)
        self._writer: AsyncCommitter[Item, postgres_connections.AsyncDb] = AsyncCommitter(
            functools.partial(
                postgres_connections.connect_async, dsn, schema, name="veilgate-release", unavailable=UNAVAILABLE
            ),
            self._apply,
            limit=BATCH_LIMIT,
            fail=_fail,
            begin=locks,
            name="veilgate-release",
        )

    async def admit_and_log(
        self, request: VerificationRequest, *, now: float, build: Callable[[Admission], tuple[Made, AuditEvent]]
    ) -> tuple[Admission, Made, int]:
        waiter: asyncio.Future[tuple[Admission, Made, int]] = asyncio.get_running_loop().create_future()
        if not self._writer.offer((Admit(request, now), Prebuilt(build, presumed(request)), waiter)):
            return await self._sequential.admit_and_log(request, now=now, build=build)
        return await waiter

    async def _apply(self, conn: postgres_connections.AsyncDb, batch: list[Item]) -> Settle:
        # Sent before the ledger's read and answered with it (the pipeline): the log's lock, taken
        # with BEGIN, keeps the largest `seq` as it is until the COMMIT.
        next_seq_read = await conn.execute(NEXT_SEQ_SQL)
        outcomes, after = await self._ledger.admit_in(conn, [(admit, waiter) for admit, _built, waiter in batch])
        built = {id(waiter): prebuilt for _admit, prebuilt, waiter in batch}
        settled: list[tuple[Waiter, Any, BaseException | None]] = []
        leaves: list[tuple[LeafText, Waiter]] = []
        for waiter, admission, refused in outcomes:
            if refused is not None:
                settled.append((waiter, None, refused))
                continue
            # A rebuild that raises (a bug) fails the whole batch: nothing is charged without its leaf.
            made, text = built[id(waiter)].for_admission(admission)
            settled.append((waiter, (admission, made), None))
            leaves.append((text, waiter))
        seqs: dict[int, int] = {}
        ((next_seq,),) = await next_seq_read.fetchall()
        if leaves:
            await conn.insert_many(INSERT_SQL, numbered(leaves, next_seq))
            seqs = {id(waiter): next_seq + offset for offset, (_leaf, waiter) in enumerate(leaves)}

        def settle(error: BaseException | None) -> None:
            if error is not None:
                _fail(batch, error)
                return
            for waiter, result, refused in settled:
                resolve(waiter, None if result is None else (*result, seqs[id(waiter)]), refused)
            after()
            self._ledger.prune_when_due()

        return settle

    def close(self) -> None:
        self._writer.close()


def _fail(batch: list[Item], cause: BaseException) -> None:
    """Nothing of the batch is durable: every caller learns it."""
    for _admit, _built, waiter in batch:
        failure = DependencyError(UNAVAILABLE)
        failure.__cause__ = cause
        resolve(waiter, None, failure)
