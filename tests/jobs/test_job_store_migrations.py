"""A job store written before versioned migrations (its table made by the DDL of then, no
`schema_versions`) opens on both backends with its rows intact, its missing columns added, and
the steps recorded once."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from gateway.state import migrations
from gateway.state.jobs_postgres import PostgresJobStore
from gateway.state.jobs_sqlite import SqliteJobStore
from gateway.state.ports import JobStore
from tests.conftest import ON_POSTGRES, PG_DSN, pg_old_schema

OLD_DDL = """CREATE TABLE jobs (
    id TEXT PRIMARY KEY, submitter TEXT NOT NULL, organisation TEXT NOT NULL, service TEXT NOT NULL,
    purpose TEXT NOT NULL, grant_id TEXT NOT NULL, code TEXT NOT NULL, code_kind TEXT NOT NULL,
    code_sha256 TEXT NOT NULL,
    datasets TEXT NOT NULL, outputs TEXT NOT NULL, epsilon TEXT, status TEXT NOT NULL,
    reviews TEXT NOT NULL, created TEXT NOT NULL, updated TEXT NOT NULL,
    result TEXT, stdout TEXT, stderr TEXT, reason TEXT)"""
"""The table as the first job stores made it: no runner, attempts, plans, notes, tables or held
outputs."""
OLD_INSERT = "INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
REVIEWS = [{"reviewer": "admin-a", "decision": "approve", "reason": "fine", "code_sha256": "h", "at": "t"},
           {"reviewer": "admin-b", "decision": "approve", "reason": "fine", "code_sha256": "h", "at": "t"}]  # fmt: skip
ROWS = [
    ("job-finished", "demo-researcher", "o", "s", "p", "g", "print(1)", "file", "h", '["d"]', '["out"]', "0.5",
     "finished", json.dumps(REVIEWS), "2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00",
     '{"outputs": {"out": 1}}', "ok", "", None),
    ("job-approved", "demo-researcher", "o", "s", "p", "g", "print(2)", "file", "h2", '["d"]', '["out"]', None,
     "approved", json.dumps(REVIEWS), "2026-01-03T00:00:00+00:00", "2026-01-03T00:00:00+00:00",
     None, None, None, None),
]  # fmt: skip
Execute = Callable[[str, Sequence[Any]], Any]


@contextlib.contextmanager
def _old_store(backend: str, tmp_path: Path) -> Iterator[tuple[Callable[[], JobStore], Execute]]:
    """A store at the layout of before, with ROWS in it: a factory of handles on it, and a raw
    connection to look at its tables."""
    if backend == "sqlite":
        path = tmp_path / "jobs.sqlite3"
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as raw:
            raw.execute(OLD_DDL)
            raw.executemany(OLD_INSERT, ROWS)
            yield (lambda: SqliteJobStore(path)), raw.execute
        return

    assert PG_DSN is not None
    with pg_old_schema() as (schema, db):
        db.execute(OLD_DDL)
        db.executemany(OLD_INSERT, ROWS)
        yield (lambda: PostgresJobStore(PG_DSN or "", schema=schema)), db.execute


@pytest.mark.parametrize("backend", ["sqlite", ON_POSTGRES])
def test_a_job_store_of_before_is_migrated_with_its_rows_intact(backend: str, tmp_path: Path) -> None:
    with _old_store(backend, tmp_path) as (open_store, raw):
        store = open_store()
        try:
            finished = store.get("job-finished")
            assert (finished.status, finished.result, finished.stdout, finished.reviews) == (
                "finished", {"outputs": {"out": 1}}, "ok", REVIEWS
            )  # fmt: skip
            assert (finished.attempt, finished.plan, finished.notes, finished.tables, finished.held) == (
                0, None, None, None, None
            )  # fmt: skip
            assert store.code_of("job-approved") == ("print(2)", "file", "h2")
            # The added columns work: the approved job is claimed (a runner, an attempt) and finished.
            claimed = store.claim_run("job-approved")
            assert (claimed.status, claimed.attempt) == ("running", 1)
            done = store.finish(claimed, status="finished", result={"outputs": {}}, stdout="", stderr="",
                                reason=None, notes=["withheld: none"])  # fmt: skip
            assert done.notes == ["withheld: none"] and done.reviews == REVIEWS
        finally:
            store.close()
        assert migrations.applied(raw, "jobs") == [1, 2]
        columns = [c[0] for c in raw("SELECT * FROM jobs LIMIT 0", ()).description]
        again = open_store()  # opening again applies nothing and adds nothing
        try:
            assert again.get("job-finished") == finished
            assert [c[0] for c in raw("SELECT * FROM jobs LIMIT 0", ()).description] == columns
            assert raw("SELECT count(*) FROM schema_versions WHERE store = ?", ("jobs",)).fetchone()[0] == 2
        finally:
            again.close()
        assert {"runner", "attempt", "plan", "plan_sha256", "notes", "tables", "held"} <= set(columns)
