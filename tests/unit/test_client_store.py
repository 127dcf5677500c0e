"""Client accounts on both backends: SQLite always, PostgreSQL when VEILGATE_TEST_PG_DSN is set.
A client disabled through one handle (another process, or a replica) is refused by the others;
an account file of before is imported once and kept; an old database is migrated."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.domain.principal import Role
from gateway.errors import Conflict, NotFound
from gateway.state import migrations, postgres_connections
from gateway.state.accounts import STEPS
from gateway.state.accounts_postgres import PostgresAccountStore
from gateway.state.accounts_sqlite import SqliteAccountStore
from gateway.state.ports import AccountStore
from gateway.state.secrets import hash_secret
from tests.conftest import ON_POSTGRES, PG_DSN, eventually, needs_pg, pg_schema, store_handles


@pytest.fixture(params=["sqlite", ON_POSTGRES])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], AccountStore]]:
    """A factory: every call opens another handle on one set of accounts."""
    with store_handles(
        request.param,
        lambda: SqliteAccountStore(tmp_path / "accounts.sqlite3"),
        lambda dsn, schema: PostgresAccountStore(dsn, schema=schema),
    ) as factory:
        yield factory


def test_accounts_are_made_checked_and_disabled_across_handles(open_store: Callable[[], AccountStore]) -> None:
    here, there = open_store(), open_store()
    secret = here.add("bank-1", "Bank One", [Role.CONSUMER])
    assert secret.startswith("vgs_") and secret not in repr(here.find("bank-1"))
    with pytest.raises(Conflict):
        here.add("bank-1", "Bank One", [Role.CONSUMER])
    found = here.check_credentials("bank-1", secret)
    assert found is not None and found.roles == frozenset({Role.CONSUMER})
    assert found.identity == "org:Bank One" and found.revision == 1
    assert here.check_credentials("bank-1", secret + "x") is None
    assert here.check_credentials("nobody", secret) is None
    eventually(lambda: there.check_credentials("bank-1", secret) is not None)
    there.disable("bank-1", approvals_required=2)
    assert there.check_credentials("bank-1", secret) is None  # where it was disabled: at once
    eventually(lambda: here.check_credentials("bank-1", secret) is None)
    with pytest.raises(NotFound):
        there.disable("nobody", approvals_required=2)
    assert [(c.client_id, c.disabled) for c in here.all()] == [("bank-1", True)]


def _old_file(path: Path) -> str:
    """A `clients.json` as the store before this one wrote it; returns the admin's secret."""
    secret = "vgs_old-admin-secret"
    record = {"client_id": "admin-1", "organisation": "Operator", "roles": ["admin"], "disabled": False,
              "secret_hash": hash_secret(secret), "created_at": "2026-01-01T00:00:00+00:00"}  # fmt: skip
    path.write_text(json.dumps({"clients": [record]}))
    return secret


def test_the_account_file_of_before_is_imported_once_and_kept(tmp_path: Path) -> None:
    legacy = tmp_path / "clients.json"
    secret = _old_file(legacy)
    store = SqliteAccountStore(tmp_path / "accounts.sqlite3", import_from=legacy)
    found = store.check_credentials("admin-1", secret)
    assert found is not None and found.person == "admin-1"  # each old account is its own person
    assert not legacy.exists() and (tmp_path / "clients.json.imported").is_file()
    store.add("admin-2", "Operator", [Role.ADMIN], person="Another")  # not the last administrator
    store.disable("admin-1", approvals_required=1)
    store.close()
    _old_file(legacy)  # a file put back later is not imported over the accounts
    again = SqliteAccountStore(tmp_path / "accounts.sqlite3", import_from=legacy)
    assert again.find("admin-1").disabled  # type: ignore[union-attr]
    again.close()


def test_an_old_database_is_migrated_in_order_and_once(tmp_path: Path) -> None:
    """A database at the layout of before (version 0: no versions table, records without a
    person) is brought to the latest version; opening it again applies nothing."""
    path = tmp_path / "accounts.sqlite3"
    with sqlite3.connect(path) as old:
        old.execute("CREATE TABLE clients (client_id TEXT PRIMARY KEY, record TEXT NOT NULL)")
        record = {"client_id": "admin-1", "organisation": "Operator", "roles": ["admin"],
                  "secret_hash": hash_secret("x"), "created_at": "2026-01-01T00:00:00+00:00"}  # fmt: skip
        old.execute("INSERT INTO clients VALUES (?, ?)", ("admin-1", json.dumps(record)))
    SqliteAccountStore(path).close()
    with sqlite3.connect(path) as db:
        assert migrations.applied(db.execute, "accounts") == [1, 2]
        (text,) = db.execute("SELECT record FROM clients").fetchone()
        assert json.loads(text)["person"] == "admin-1"
        assert db.execute("SELECT count(*) FROM account_proposals").fetchone() == (0,)
    with sqlite3.connect(path) as db:
        assert migrations.migrate(db.execute, "accounts", STEPS) == []


@pytest.mark.postgres
@needs_pg
def test_an_old_postgres_database_is_migrated_and_its_file_copied_once(tmp_path: Path) -> None:
    import psycopg

    assert PG_DSN is not None
    legacy = tmp_path / "clients.json"
    secret = _old_file(legacy)
    with pg_schema() as schema:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:  # the layout of before, empty
            conn.execute(psycopg.sql.SQL("CREATE SCHEMA {}").format(psycopg.sql.Identifier(schema)))
            conn.execute(psycopg.sql.SQL("CREATE TABLE {}.clients (client_id TEXT PRIMARY KEY, record TEXT NOT NULL)")
                         .format(psycopg.sql.Identifier(schema)))  # fmt: skip
        first = PostgresAccountStore(PG_DSN, schema=schema, import_from=legacy)
        first.add("admin-2", "Operator", [Role.ADMIN], person="Another")  # not the last administrator
        first.disable("admin-1", approvals_required=1)  # later changes are not overwritten by the file
        second = PostgresAccountStore(PG_DSN, schema=schema, import_from=legacy)
        try:
            assert first.check_credentials("admin-1", secret) is None
            assert second.find("admin-1").disabled  # type: ignore[union-attr]
            with psycopg.connect(PG_DSN, autocommit=True) as conn:
                conn.execute(psycopg.sql.SQL("SET search_path TO {}").format(psycopg.sql.Identifier(schema)))
                assert migrations.applied(postgres_connections.Db(conn).execute, "accounts") == [1, 2]
        finally:
            first.close()
            second.close()


def _create_many(backend: str, where: str, prefix: str, count: int) -> None:
    """In a process of its own: open a handle and create `count` accounts, one change each."""
    store: AccountStore = (
        PostgresAccountStore(PG_DSN or "", schema=where, listen=False)
        if backend == "postgres"
        else SqliteAccountStore(Path(where))
    )
    for i in range(count):
        store.add(f"{prefix}-{i}", "Org", [Role.CONSUMER])
    store.close()


@pytest.mark.parametrize("backend", ["sqlite", ON_POSTGRES])
def test_two_processes_creating_while_one_disables_lose_nothing(backend: str, tmp_path: Path) -> None:
    """The lost updates of the JSON file: each process read, changed and rewrote it whole."""
    ctx = multiprocessing.get_context("spawn")
    with contextlib.ExitStack() as stack:
        schema = stack.enter_context(pg_schema()) if backend == "postgres" else ""
        where = schema or str(tmp_path / "accounts.sqlite3")
        store: AccountStore = (
            PostgresAccountStore(PG_DSN or "", schema=schema)
            if backend == "postgres"
            else SqliteAccountStore(Path(where))
        )
        stack.callback(store.close)
        secret = store.add("victim", "Org", [Role.CONSUMER])
        workers = [ctx.Process(target=_create_many, args=(backend, where, f"w{n}", 12)) for n in range(2)]
        for worker in workers:
            worker.start()
        store.disable("victim", approvals_required=2)
        for worker in workers:
            worker.join(timeout=120)
            assert worker.exitcode == 0
        eventually(lambda: len(store.all()) == 25)
        assert store.check_credentials("victim", secret) is None
        assert {a.client_id for a in store.all()} == {"victim"} | {f"w{n}-{i}" for n in range(2) for i in range(12)}
