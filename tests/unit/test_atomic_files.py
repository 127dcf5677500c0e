"""State files that other processes change are looked at again at most once per recheck interval,
and a change made through the same store is seen at once."""

from __future__ import annotations

import time
from pathlib import Path

from gateway.atomic_files import Recheck
from gateway.domain.policy import FreezeKind
from gateway.state.freezes_sqlite import SqliteFreezeStore


def test_a_change_by_another_process_is_seen_after_the_recheck_interval(tmp_path: Path) -> None:
    """The freezes of a server that looks at the file (`PRAGMA data_version`) at most every `interval`: another
    process's stop is not looked for before, and is in force on the first call after it."""
    path = tmp_path / "freezes.sqlite3"
    other_process = SqliteFreezeStore(path)
    patient = SqliteFreezeStore(path, recheck_seconds=3600)
    assert patient.active() == {}
    other_process.freeze(FreezeKind.CONSUMER, "demo-business", by="a", reason="r")
    assert patient.active() == {}  # an hour's interval: not looked at again yet
    interval = 0.05
    server = SqliteFreezeStore(path, recheck_seconds=interval)
    assert (FreezeKind.CONSUMER, "demo-business") in server.active()
    other_process.unfreeze(FreezeKind.CONSUMER, "demo-business", by="a", reason="r")
    time.sleep(interval)
    assert server.active() == {}


def test_a_change_made_through_the_store_is_seen_at_once(tmp_path: Path) -> None:
    store = SqliteFreezeStore(tmp_path / "freezes.sqlite3", recheck_seconds=3600)
    assert store.active() == {}
    store.freeze(FreezeKind.SERVICE, "tax-compliance", by="a", reason="r")
    assert (FreezeKind.SERVICE, "tax-compliance") in store.active()


def test_recheck_is_due_once_per_interval_or_when_told() -> None:
    every_time = Recheck(0)
    assert every_time.due() and every_time.due()
    hourly = Recheck(3600)
    assert hourly.due()  # the first look
    assert not hourly.due()
    hourly.now()
    assert hourly.due() and not hourly.due()
