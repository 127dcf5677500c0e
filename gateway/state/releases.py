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

from gateway.domain.trail import AuditEvent
from gateway.errors import DependencyError
from gateway.state import postgres_connections
from gateway.state.audit import INSERT_SQL, NEXT_SEQ_SQL, numbered
from gateway.state.audit_postgres import PG_LOCK as AUDIT_LOCK
from gateway.state.group_commit import Settle, Waiter, resolve
from gateway.state.group_commit_async import AsyncCommitter
from gateway.state.ledger import BATCH_LIMIT
from gateway.state.ledger_admission import Admit
from gateway.state.ledger_postgres import PostgresLedger
from gateway.state.ledger_tables import PG_LOCK as LEDGER_LOCK
from gateway.state.ports import Admission, AuditLogStore, LedgerStore, VerificationRequest

Made = TypeVar("Made")
Build = Callable[[Admission], tuple[Any, AuditEvent]]
Item = tuple[Admit, Build, Waiter]
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


class PostgresReleases:
    """Admissions and their leaves in one transaction per batch, on the event loop.

    A batch holds both stores' locks: the admissions are decided in order against one read of
    the rows they touch (`PostgresLedger.admit_in`), each admitted one's leaf is built and the
    leaves are numbered after the largest stored `seq`, and one COMMIT makes all of it durable.
    A refused admission writes nothing here (its refusal count is noted after the COMMIT, its
    leaf is the request middleware's). A batch that fails, a leaf that cannot be built
    included, leaves neither charges nor leaves. A request whose caller left while its batch was
    written is charged and has its leaf, as one whose answer was lost in transit.
    From another event loop than the one this is bound to, the sequential path is taken.
    """

    def __init__(self, dsn: str, schema: str, ledger: PostgresLedger, audit: AuditLogStore) -> None:
        self._ledger = ledger
        self._sequential = SequentialReleases(ledger, audit)
        locks = tuple(postgres_connections.advisory_lock_sql(lock) for lock in (LEDGER_LOCK, AUDIT_LOCK))
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
        if not self._writer.offer((Admit(request, now), build, waiter)):
            return await self._sequential.admit_and_log(request, now=now, build=build)
        return await waiter

    async def _apply(self, conn: postgres_connections.AsyncDb, batch: list[Item]) -> Settle:
        # Sent before the ledger's read and answered with it (the pipeline): the log's lock, taken
        # with BEGIN, keeps the largest `seq` as it is until the COMMIT.
        next_seq_read = await conn.execute(NEXT_SEQ_SQL)
        outcomes, after = await self._ledger.admit_in(conn, [(admit, waiter) for admit, _build, waiter in batch])
        builds = {id(waiter): build for _admit, build, waiter in batch}
        settled: list[tuple[Waiter, Any, BaseException | None]] = []
        leaves: list[tuple[AuditEvent, Waiter]] = []
        for waiter, admission, refused in outcomes:
            if refused is not None:
                settled.append((waiter, None, refused))
                continue
            # A build that raises (a bug) fails the whole batch: nothing is charged without its leaf.
            made, leaf = builds[id(waiter)](admission)
            settled.append((waiter, (admission, made), None))
            leaves.append((leaf, waiter))
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
    for _admit, _build, waiter in batch:
        failure = DependencyError(UNAVAILABLE)
        failure.__cause__ = cause
        resolve(waiter, None, failure)
