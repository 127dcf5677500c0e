"""The ledger's versioned migrations: a ledger written before them (its tables made by the DDL of
then, no `schema_versions`) opens on both backends with every row intact and step 1 recorded
once; a ledger from a newer release is refused, naming the rule."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ConfigurationError
from gateway.state import migrations
from gateway.state.ledger import LedgerRules
from gateway.state.ledger_postgres import PostgresLedger
from gateway.state.ledger_sqlite import SqliteLedger
from tests.conftest import ON_POSTGRES, PG_DSN, pg_old_schema

OLD_SQLITE_DDL = (
    """CREATE TABLE counters (scope TEXT NOT NULL, window INTEGER NOT NULL, used INTEGER NOT NULL,
        until REAL NOT NULL, PRIMARY KEY (scope, window)) WITHOUT ROWID""",
    """CREATE TABLE members (scope TEXT NOT NULL, window INTEGER NOT NULL, item TEXT NOT NULL,
        until REAL NOT NULL, PRIMARY KEY (scope, window, item)) WITHOUT ROWID""",
    """CREATE TABLE answers (scope TEXT NOT NULL, window INTEGER NOT NULL, fingerprint TEXT NOT NULL,
        answer TEXT NOT NULL, until REAL NOT NULL, PRIMARY KEY (scope, window, fingerprint)) WITHOUT ROWID""",
    "CREATE INDEX counters_until ON counters(until)",
    "CREATE INDEX members_until ON members(until)",
    "CREATE INDEX answers_until ON answers(until)",
    """CREATE TABLE alerts (id INTEGER PRIMARY KEY, at TEXT NOT NULL, kind TEXT NOT NULL,
        subject TEXT NOT NULL, message TEXT NOT NULL, dedupe TEXT UNIQUE)""",
    """CREATE TABLE billing (consumer TEXT NOT NULL, grant_id TEXT NOT NULL, service TEXT NOT NULL,
        purpose TEXT NOT NULL, day TEXT NOT NULL, calls INTEGER NOT NULL, claims INTEGER NOT NULL,
        billable INTEGER NOT NULL, fee_micro_yuan INTEGER NOT NULL,
        PRIMARY KEY (consumer, grant_id, service, purpose, day)) WITHOUT ROWID""",
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
"""The first ledger layout (keyed WITHOUT ROWID tables), as SQLite ledgers were made before
versioned migrations."""
OLD_PG_DDL = (
    """CREATE TABLE counters (scope TEXT NOT NULL, "window" BIGINT NOT NULL, used BIGINT NOT NULL,
        until DOUBLE PRECISION NOT NULL, PRIMARY KEY (scope, "window"))""",
    """CREATE TABLE members (scope TEXT NOT NULL, "window" BIGINT NOT NULL, item TEXT NOT NULL,
        until DOUBLE PRECISION NOT NULL, PRIMARY KEY (scope, "window", item))""",
    """CREATE TABLE answers (scope TEXT NOT NULL, "window" BIGINT NOT NULL, fingerprint TEXT NOT NULL,
        answer TEXT NOT NULL, until DOUBLE PRECISION NOT NULL, PRIMARY KEY (scope, "window", fingerprint))""",
    "CREATE INDEX counters_until ON counters(until)",
    "CREATE INDEX members_until ON members(until)",
    "CREATE INDEX answers_until ON answers(until)",
    """CREATE TABLE alerts (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, at TEXT NOT NULL,
        kind TEXT NOT NULL, subject TEXT NOT NULL, message TEXT NOT NULL, dedupe TEXT UNIQUE)""",
    """CREATE TABLE billing (consumer TEXT NOT NULL, grant_id TEXT NOT NULL, service TEXT NOT NULL,
        purpose TEXT NOT NULL, day TEXT NOT NULL, calls BIGINT NOT NULL, claims BIGINT NOT NULL,
        billable BIGINT NOT NULL, fee_micro_yuan BIGINT NOT NULL,
        PRIMARY KEY (consumer, grant_id, service, purpose, day))""",
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
"""The PostgreSQL ledger layout before versioned migrations."""
ROWS: dict[str, list[tuple[Any, ...]]] = {
    "counters": [("rate:grant-a", 7, 3, 1.0e12), ("quota:grant-a", 1, 41, 2.0e12)],
    "members": [("keys:grant-a", 7, "p-1", 1.0e12), ("keys:grant-a", 7, "p-2", 1.0e12)],
    "answers": [("repeat:grant-a", 7, "f-1", '{"match": true}', 1.0e12)],
    "alerts": [("2026-01-01T00:00:00+00:00", "probing", "grant-a", "many keys", "probing:grant-a:7")],
    "billing": [("bank", "grant-a", "identity", "kyc", "2026-01-01", 5, 9, 8, 1200)],
    "meta": [("pseudonym_key", "key-1")],
}
ORDER = {"counters": "scope", "members": "item", "answers": "fingerprint", "alerts": "at", "billing": "day",
         "meta": "name"}  # fmt: skip
COLUMNS = {"alerts": "at, kind, subject, message, dedupe"}
Execute = Callable[[str, Sequence[Any]], Any]


def _fill(execute: Execute) -> None:
    for table, rows in ROWS.items():
        columns = COLUMNS.get(table)
        names = f" ({columns})" if columns else ""
        for row in rows:
            execute(f"INSERT INTO {table}{names} VALUES ({', '.join('?' * len(row))})", row)  # noqa: S608


def _rows(execute: Execute) -> dict[str, list[tuple[Any, ...]]]:
    found = {}
    for table in ROWS:
        columns = COLUMNS.get(table, "*")
        rows = execute(f"SELECT {columns} FROM {table} ORDER BY {ORDER[table]}", ()).fetchall()  # noqa: S608
        found[table] = [tuple(row) for row in rows]
    return found


@contextlib.contextmanager
def _database(backend: str, tmp_path: Path, ddl: Sequence[str]) -> Iterator[tuple[Callable[[], LedgerRules], Execute]]:
    """A ledger database made by `ddl` (nothing, if empty): a factory of ledgers on it, and a raw
    connection to look at its tables."""
    if backend == "sqlite":
        directory = tmp_path / "ledger"
        directory.mkdir()
        with contextlib.closing(sqlite3.connect(directory / "ledger.sqlite3", isolation_level=None)) as raw:
            for statement in ddl:
                raw.execute(statement)
            yield (lambda: SqliteLedger.open(directory)), raw.execute
        return

    assert PG_DSN is not None
    with pg_old_schema() as (schema, db):
        for statement in ddl:
            db.execute(statement)
        yield (lambda: PostgresLedger(PG_DSN or "", schema=schema)), db.execute


@pytest.mark.parametrize("backend", ["sqlite", ON_POSTGRES])
def test_a_ledger_of_before_is_migrated_with_its_rows_intact(backend: str, tmp_path: Path) -> None:
    with _database(backend, tmp_path, OLD_SQLITE_DDL if backend == "sqlite" else OLD_PG_DDL) as (open_ledger, raw):
        _fill(raw)
        before = _rows(raw)
        assert {table: len(rows) for table, rows in before.items()} == {
            table: len(rows) for table, rows in ROWS.items()
        }
        ledger = open_ledger()
        try:
            assert migrations.applied(raw, "ledger") == [1]
            assert _rows(raw) == before
            # The rules read the old rows as they read their own.
            assert ledger.usage("grant-a") == [("identity", "kyc", "2026-01-01", 5, 9, 8)]
            assert [(a["kind"], a["subject"]) for a in ledger.alerts()] == [("probing", "grant-a")]
            ledger.bind_pseudonyms("key-1")  # the recorded secret is still there
            with pytest.raises(ConfigurationError, match="subject secret"):
                ledger.bind_pseudonyms("key-2")
        finally:
            ledger.close()
        again = open_ledger()  # opening again applies nothing
        again.close()
        assert raw("SELECT count(*) FROM schema_versions WHERE store = ?", ("ledger",)).fetchone()[0] == 1
        assert _rows(raw) == before


@pytest.mark.parametrize("backend", ["sqlite", ON_POSTGRES])
def test_a_ledger_from_a_newer_release_is_refused(backend: str, tmp_path: Path) -> None:
    with _database(backend, tmp_path, ()) as (open_ledger, raw):
        open_ledger().close()  # made by this release: version 1
        raw("INSERT INTO schema_versions VALUES (?, ?, ?)", ("ledger", 2, "2027-01-01T00:00:00+00:00"))
        tables = raw("SELECT count(*) FROM schema_versions", ()).fetchone()[0]
        with pytest.raises(ConfigurationError, match=r"ledger store was written by a newer Veilgate.*schema_versions"):
            open_ledger()
        assert raw("SELECT count(*) FROM schema_versions", ()).fetchone()[0] == tables  # nothing applied
        assert migrations.applied(raw, "ledger") == [1, 2]
