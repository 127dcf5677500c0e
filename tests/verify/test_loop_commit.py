"""Admissions and leaves written from the event loop (`LoopCommitter`): the loop never waits on
the file lock, the limits hold exactly beside the writer thread and other processes, and a
caller that stops waiting does not disturb the others."""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
import threading
from pathlib import Path

import pytest

from gateway.errors import DependencyError, RateLimited
from gateway.state.audit_sqlite import SqliteAuditLog
from gateway.state.ledger_sqlite import SqliteLedger
from tests.trust.conftest import event
from tests.verify.test_ledger import NOON, _admit_many, claim, request


def test_the_loop_keeps_serving_while_another_writer_holds_the_lock(tmp_path: Path) -> None:
    ledger = SqliteLedger.open(tmp_path)
    holder = sqlite3.connect(ledger.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # as another process mid-transaction

    async def scenario() -> tuple[int, int]:
        admitting = asyncio.create_task(ledger.admit_verification_async(request(claim("k1")), now=NOON))
        ticks = 0
        for _ in range(20):  # the loop runs other work meanwhile: it is not sleeping on the lock
            await asyncio.sleep(0.005)
            ticks += 1
        assert not admitting.done()
        holder.execute("COMMIT")
        admission = await asyncio.wait_for(admitting, timeout=10)
        return ticks, len(admission.answers)

    assert asyncio.run(scenario()) == (20, 1)
    assert ledger.usage("g1")[0][4] == 1
    ledger.close()


def test_a_lock_held_past_the_busy_timeout_fails_the_batch_cleanly(tmp_path: Path) -> None:
    SqliteLedger.open(tmp_path).close()
    ledger = SqliteLedger.open(tmp_path, busy_timeout_seconds=0.05)
    holder = sqlite3.connect(ledger.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")

    async def scenario() -> None:
        with pytest.raises(DependencyError, match="ledger is unavailable"):
            await asyncio.wait_for(ledger.admit_verification_async(request(claim("k1")), now=NOON), timeout=10)

    asyncio.run(scenario())
    holder.execute("ROLLBACK")
    assert ledger.usage("g1") == []  # nothing was counted
    ledger.close()


def test_the_loop_and_the_writer_thread_share_one_quota_exactly(tmp_path: Path) -> None:
    ledger = SqliteLedger.open(tmp_path)
    admitted = {"thread": 0, "loop": 0}

    def from_thread() -> None:
        for i in range(60):
            try:
                ledger.admit_verification(request(claim(f"t{i}"), quota=50), now=NOON)
                admitted["thread"] += 1
            except RateLimited:
                pass

    async def from_loop() -> None:
        async def one(i: int) -> None:
            try:
                await ledger.admit_verification_async(request(claim(f"l{i}"), quota=50), now=NOON)
                admitted["loop"] += 1
            except RateLimited:
                pass

        await asyncio.gather(*(one(i) for i in range(60)))

    async def first_from_loop() -> None:
        for i in range(5):
            await ledger.admit_verification_async(request(claim(f"first{i}"), quota=50), now=NOON)

    asyncio.run(first_from_loop())  # both paths write before they race (which wins a race is timing)
    for i in range(5):
        ledger.admit_verification(request(claim(f"second{i}"), quota=50), now=NOON)
    thread = threading.Thread(target=from_thread)
    thread.start()
    asyncio.run(from_loop())
    thread.join()
    assert admitted["thread"] + admitted["loop"] == 40  # 120 more attempts, exactly what the quota left
    assert ledger.usage("g1")[0][4] == 50
    ledger.close()


def test_the_loop_path_holds_the_quota_against_other_processes(tmp_path: Path) -> None:
    ledger = SqliteLedger.open(tmp_path)
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [context.Process(target=_admit_many, args=(("sqlite", str(tmp_path)), w, 30, results)) for w in range(2)]
    for worker in workers:
        worker.start()

    async def from_loop() -> int:
        async def one(i: int) -> int:
            try:
                await ledger.admit_verification_async(request(claim(f"l{i}"), quota=50), now=NOON)
            except RateLimited:
                return 0
            return 1

        return sum(await asyncio.gather(*(one(i) for i in range(60))))

    from_here = asyncio.run(from_loop())
    for worker in workers:
        worker.join(timeout=120)
    assert from_here + sum(results.get(timeout=10) for _ in workers) == 50  # 120 attempts
    assert ledger.usage("g1")[0][4] == 50
    ledger.close()


def test_a_caller_that_stops_waiting_does_not_disturb_its_batch(tmp_path: Path) -> None:
    log = SqliteAuditLog.open(tmp_path / "audit")

    async def scenario() -> list[int]:
        tasks = [asyncio.create_task(log.append_async(event(i))) for i in range(8)]
        await asyncio.sleep(0)  # every task has queued its leaf and waits; the batch is not yet written
        tasks[3].cancel()  # its client went away
        done = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(done[3], asyncio.CancelledError)
        return [seq for seq in done if isinstance(seq, int)]

    seqs = asyncio.run(scenario())
    assert sorted(seqs) == [0, 1, 2, 4, 5, 6, 7]  # the others learn their place in the log
    assert log.size() == 8  # the leaf of the one that left is written all the same
    log.close()
