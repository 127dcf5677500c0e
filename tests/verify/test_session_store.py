"""Ended console sessions on both stores: SQLite always, PostgreSQL when VEILGATE_TEST_PG_DSN is
set. A logout recorded through one handle (one process, or one replica) is seen through another
at once; records whose tokens have expired are pruned; the table is made by a versioned step."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.state import migrations
from gateway.state.ports import SessionStore
from gateway.state.sessions_postgres import PostgresSessionStore
from gateway.state.sessions_sqlite import STORE, SqliteSessionStore
from tests.conftest import ON_POSTGRES, store_handles


@pytest.fixture(params=["sqlite", ON_POSTGRES])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], SessionStore]]:
    with store_handles(
        request.param,
        lambda: SqliteSessionStore(tmp_path / "sessions.sqlite3"),
        lambda dsn, schema: PostgresSessionStore(dsn, schema=schema),
    ) as factory:
        yield factory


def test_a_logout_in_one_process_is_seen_by_every_other_at_once(open_store: Callable[[], SessionStore]) -> None:
    logging_out, checking = open_store(), open_store()
    now = int(time.time())
    assert not checking.has_ended("session-a")
    logging_out.end("session-a", until=now + 900)
    assert checking.has_ended("session-a") and not checking.has_ended("session-b")
    logging_out.end("session-a", until=now + 900)  # a second logout of the same session changes nothing
    assert checking.has_ended("session-a")


def test_records_of_expired_tokens_are_pruned_by_the_next_logout(open_store: Callable[[], SessionStore]) -> None:
    store, other = open_store(), open_store()
    now = int(time.time())
    store.end("expired-already", until=now - 5)
    store.end("still-valid", until=now + 900)
    assert other.has_ended("still-valid") and not other.has_ended("expired-already")
    other.end("later", until=now + 900)
    assert store.has_ended("still-valid") and store.has_ended("later")


def test_the_sqlite_table_is_made_by_a_recorded_step(tmp_path: Path) -> None:
    path = tmp_path / "sessions.sqlite3"
    SqliteSessionStore(path).close()
    SqliteSessionStore(path).close()  # opened again: nothing applied twice
    conn = sqlite3.connect(path)
    try:
        assert migrations.applied(conn.execute, STORE) == [1]
    finally:
        conn.close()
