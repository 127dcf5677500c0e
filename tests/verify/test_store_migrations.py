"""PostgreSQL stores written before versioned migrations (tables made by the DDL of then, no
`schema_versions`) open with their rows intact and their steps recorded once: the freezes, the
objections and the policy store. (Their SQLite stores began with versioned steps.)"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.domain.policy import Freeze, FreezeKind
from gateway.state import migrations, postgres_connections
from gateway.state.freezes_postgres import PostgresFreezeStore
from gateway.state.objections_postgres import PostgresObjectionStore
from gateway.state.policy_postgres import PostgresPolicyStore
from gateway.state.ports import Status
from tests.conftest import PG_DSN, needs_pg, pg_old_schema, pg_schema

pytestmark = [pytest.mark.postgres, needs_pg]


@pytest.fixture
def old_schema() -> Iterator[tuple[str, postgres_connections.Db]]:
    """A schema of its own, and a raw connection into it."""

    assert PG_DSN is not None
    with pg_old_schema() as made:
        yield made


def test_freezes_of_before_are_migrated_with_their_rows(old_schema: tuple[str, postgres_connections.Db]) -> None:
    schema, raw = old_schema
    raw.execute("CREATE TABLE freezes (kind TEXT NOT NULL, name TEXT NOT NULL, record TEXT NOT NULL, "
                "PRIMARY KEY (kind, name))")  # fmt: skip
    raw.execute("CREATE TABLE freeze_history (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, event TEXT NOT NULL)")
    stop = Freeze(kind=FreezeKind.SERVICE, name="svc", since="2026-01-01T00:00:00+00:00", by="admin", reason="x")
    raw.execute("INSERT INTO freezes VALUES (?, ?, ?)", ("service", "svc", stop.model_dump_json()))
    raw.execute("INSERT INTO freeze_history (event) VALUES (?)", (json.dumps({"action": "freeze", "name": "svc"}),))
    for _opening in range(2):
        store = PostgresFreezeStore(PG_DSN or "", schema=schema, listen=False)
        try:
            assert store.active() == {(FreezeKind.SERVICE, "svc"): stop}
            assert store.history()[0] == {"action": "freeze", "name": "svc"}
        finally:
            store.close()
    assert migrations.applied(raw.execute, "freezes") == [1, 2]
    store = PostgresFreezeStore(PG_DSN or "", schema=schema, listen=False)
    try:
        store.unfreeze(FreezeKind.SERVICE, "svc", by="admin", reason="resolved")
        assert store.active() == {} and len(store.history()) == 2
    finally:
        store.close()


def test_objections_of_before_are_migrated_with_their_rows(old_schema: tuple[str, postgres_connections.Db]) -> None:
    schema, raw = old_schema
    raw.execute("CREATE TABLE objections (id TEXT PRIMARY KEY, consumer TEXT NOT NULL, filed_at TEXT NOT NULL, "
                "record TEXT NOT NULL)")  # fmt: skip
    old: dict[str, Any] = {
        "id": "abc123", "consumer": "demo-business", "about": "dataset", "subject": "enterprises",
        "text": "wrong", "status": "open", "filed_at": "2026-01-01T00:00:00+00:00", "steps": [],
    }  # fmt: skip
    raw.execute(
        "INSERT INTO objections VALUES (?, ?, ?, ?)", (old["id"], old["consumer"], old["filed_at"], json.dumps(old))
    )
    for _opening in range(2):
        store = PostgresObjectionStore(PG_DSN or "", schema=schema)
        try:
            assert store.get("abc123") == old and store.list("demo-business") == [old]
        finally:
            store.close()
    assert migrations.applied(raw.execute, "objections") == [1]
    store = PostgresObjectionStore(PG_DSN or "", schema=schema)
    try:
        assert store.move("abc123", Status.ACCEPTED, reply="looking", by="admin")["status"] == "accepted"
    finally:
        store.close()


def test_a_policy_store_of_before_is_migrated_with_its_state(old_schema: tuple[str, postgres_connections.Db]) -> None:
    schema, raw = old_schema
    raw.execute("CREATE TABLE policy_versions (version TEXT PRIMARY KEY, bundle TEXT NOT NULL)")
    raw.execute("CREATE TABLE policy_state (id INTEGER PRIMARY KEY CHECK (id = 1), state TEXT NOT NULL, "
                "changes BIGINT NOT NULL)")  # fmt: skip
    state = {
        "active": "v-old",
        "previous": [],
        "proposals": {},
        "history": [{"action": "activate", "version": "v-old"}],
    }
    raw.execute("INSERT INTO policy_state VALUES (1, ?, 7)", (json.dumps(state),))
    for _opening in range(2):
        store = PostgresPolicyStore(PG_DSN or "", schema=schema, listen=False)
        try:
            assert store.active_version() == "v-old" and store.history() == state["history"]
            assert store.stamp() == (7, 0)  # the change count of before, so no replica reloads for nothing
        finally:
            store.close()
    assert migrations.applied(raw.execute, "policy") == [1]
    assert raw.execute("SELECT count(*) FROM policy_state").fetchone()[0] == 1


def _open_every_store(schema: str, start: Any, failures: Any) -> None:
    """In a process of its own, as a replica starting: open every PostgreSQL store at once with
    the others (`start`), then close them; a failure is reported by its type."""
    from gateway.state.accounts_postgres import PostgresAccountStore
    from gateway.state.budget_postgres import PostgresBudgetLedger
    from gateway.state.jobs_postgres import PostgresJobStore
    from gateway.state.sessions_postgres import PostgresSessionStore

    dsn = os.environ["VG_PG"]
    start.wait(timeout=60)
    try:
        for opener in (
            lambda: PostgresBudgetLedger(dsn, schema=schema),
            lambda: PostgresJobStore(dsn, schema=schema),
            lambda: PostgresFreezeStore(dsn, schema=schema, listen=False),
            lambda: PostgresObjectionStore(dsn, schema=schema),
            lambda: PostgresPolicyStore(dsn, schema=schema, listen=False),
            lambda: PostgresAccountStore(dsn, schema=schema, listen=False),
            lambda: PostgresSessionStore(dsn, schema=schema),
        ):
            opener().close()
    except Exception as error:  # reported to the test, which fails naming it
        failures.put(type(error).__name__)


def test_replicas_starting_together_migrate_each_store_once() -> None:
    """Four processes open every store of a new schema at the same moment: the advisory lock
    (`migrations.POSTGRES_LOCK`) makes them migrate in turn, so none fails on a table another is
    creating and no step is recorded twice."""
    with pg_schema() as schema:
        context = multiprocessing.get_context("spawn")
        start, failures = context.Event(), context.Queue()
        os.environ["VG_PG"] = PG_DSN or ""
        replicas = [context.Process(target=_open_every_store, args=(schema, start, failures)) for _ in range(4)]
        for replica in replicas:
            replica.start()
        start.set()
        for replica in replicas:
            replica.join(timeout=120)
        assert [replica.exitcode for replica in replicas] == [0, 0, 0, 0]
        assert failures.empty()
        import psycopg

        with psycopg.connect(PG_DSN or "", autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("SET search_path TO {}").format(psycopg.sql.Identifier(schema)))
            rows = conn.execute("SELECT store, count(*) FROM schema_versions GROUP BY store ORDER BY store").fetchall()
        assert rows == [("accounts", 2), ("budget", 1), ("freezes", 2), ("jobs", 2), ("objections", 1), ("policy", 1),
                        ("sessions", 1)]  # fmt: skip
