"""LoopCommitter: a batch that cannot be written fails its callers and never stalls the next;
two loops never share it."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from gateway.state.group_commit import GroupCommitter, Settle, Waiter, resolve, written
from gateway.state.group_commit_loop import LoopCommitter

Item = tuple[int, Waiter]


def _fail(batch: list[Item], cause: BaseException) -> None:
    for _value, waiter in batch:
        resolve(waiter, None, RuntimeError(f"not written: {cause}"))


def _committer(path: Path, apply: Any, connect: Any = None) -> LoopCommitter[Item]:
    def default_connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
        conn.execute("CREATE TABLE IF NOT EXISTS t (v INTEGER)")
        return conn

    return LoopCommitter("test-commit", connect or default_connect, apply, limit=64, fail=_fail)


def _insert(conn: sqlite3.Connection, batch: list[Item]) -> Settle:
    if any(value < 0 for value, _waiter in batch):
        raise ValueError("a negative value")
    conn.executemany("INSERT INTO t VALUES (?)", [(value,) for value, _waiter in batch])

    def settle(error: BaseException | None) -> None:
        for value, waiter in batch:
            resolve(waiter, value, error)

    return settle


async def _put(committer: LoopCommitter[Item], value: int) -> Any:
    waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    assert committer.offer((value, waiter))
    return await waiter


def test_a_batch_that_fails_to_apply_fails_its_callers_and_the_next_batch_commits(tmp_path: Path) -> None:
    committer = _committer(tmp_path / "db.sqlite3", _insert)

    async def scenario() -> None:
        first = await asyncio.gather(_put(committer, 1), _put(committer, -1), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in first)  # one batch: all or nothing
        assert await _put(committer, 2) == 2

    asyncio.run(scenario())
    committer.close()
    assert sqlite3.connect(tmp_path / "db.sqlite3").execute("SELECT v FROM t").fetchall() == [(2,)]


def test_a_file_that_cannot_be_opened_fails_its_callers_and_does_not_stall(tmp_path: Path) -> None:
    attempts = {"n": 0}

    def flaky_connect() -> sqlite3.Connection:
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise sqlite3.OperationalError("unable to open database file")
        conn = sqlite3.connect(tmp_path / "db.sqlite3", timeout=0, isolation_level=None, check_same_thread=False)
        conn.execute("CREATE TABLE IF NOT EXISTS t (v INTEGER)")
        return conn

    committer = _committer(tmp_path / "db.sqlite3", _insert, flaky_connect)

    async def scenario() -> None:
        with pytest.raises(RuntimeError, match="unable to open"):
            await asyncio.wait_for(_put(committer, 1), timeout=5)
        assert await asyncio.wait_for(_put(committer, 2), timeout=5) == 2

    asyncio.run(scenario())
    committer.close()


def test_two_loops_on_two_threads_never_share_the_committer(tmp_path: Path) -> None:
    """Two loops on two threads offer to one idle committer at the same moment, round after round,
    with threads switching as often as Python allows: every item is written once and each caller
    gets its own answer. (Taken in two steps, a check then a queueing, two loops could both take
    it; this run did not make that interleaving happen on demand, so it guards the outcome.)"""
    path = tmp_path / "db.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as setup:
        setup.execute("PRAGMA journal_mode=WAL")
        setup.execute("CREATE TABLE t (v INTEGER)")

    def connect(wait: float) -> sqlite3.Connection:
        return sqlite3.connect(path, timeout=wait, isolation_level=None, check_same_thread=False)

    committer = _committer(path, _insert, lambda: connect(0))  # the loop's never waits for the lock
    thread_writer: GroupCommitter[Item, sqlite3.Connection] = GroupCommitter(
        "test-writer", lambda: connect(30), _insert, limit=64, fail=_fail
    )
    rounds, start = 300, threading.Barrier(2)
    results: dict[int, list[Any]] = {0: [], 1: []}

    def run(side: int) -> None:
        async def scenario() -> None:
            for i in range(rounds):
                start.wait(timeout=10)  # both loops offer to an idle committer at once
                results[side].append(await asyncio.wait_for(written(2 * i + side, committer, thread_writer), 10))

        asyncio.run(scenario())

    switching = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch between any two bytecodes
    try:
        threads = [threading.Thread(target=run, args=(side,)) for side in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        sys.setswitchinterval(switching)
        committer.close()
        thread_writer.close()
    assert results == {side: [2 * i + side for i in range(rounds)] for side in (0, 1)}
    stored = sorted(v for (v,) in sqlite3.connect(path).execute("SELECT v FROM t"))
    assert stored == list(range(2 * rounds))
