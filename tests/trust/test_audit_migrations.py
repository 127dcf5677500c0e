"""The audit log's versioned migrations: a log written before them (its tables made by the DDL of
then, no `schema_versions`) opens on both backends with every leaf and checkpoint intact, the
same tree, and step 1 recorded once; a log from a newer release is refused, naming the rule."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from gateway.domain import merkle
from gateway.domain.trail import AuditLeaf
from gateway.errors import ConfigurationError
from gateway.state import migrations
from gateway.state.audit import AuditLogRules
from gateway.state.audit_postgres import PostgresAuditLog
from gateway.state.audit_sqlite import SqliteAuditLog
from gateway.state.ports import LeafFilter
from tests.conftest import ON_POSTGRES, PG_DSN, pg_old_schema
from tests.trust.conftest import event

OLD_SQLITE_DDL = (
    """CREATE TABLE leaves (seq INTEGER PRIMARY KEY, record TEXT NOT NULL, hash BLOB NOT NULL,
        time TEXT GENERATED ALWAYS AS (json_extract(record, '$.time')) VIRTUAL,
        principal TEXT GENERATED ALWAYS AS (json_extract(record, '$.principal')) VIRTUAL,
        service TEXT GENERATED ALWAYS AS (json_extract(record, '$.service')) VIRTUAL,
        dataset TEXT GENERATED ALWAYS AS (json_extract(record, '$.dataset')) VIRTUAL,
        decision TEXT GENERATED ALWAYS AS (json_extract(record, '$.decision')) VIRTUAL)""",
    "CREATE INDEX leaves_time ON leaves(time)",
    "CREATE INDEX leaves_principal ON leaves(principal, seq)",
    "CREATE INDEX leaves_service ON leaves(service, seq)",
    "CREATE INDEX leaves_dataset ON leaves(dataset, seq)",
    "CREATE TABLE checkpoints (size INTEGER PRIMARY KEY, root TEXT NOT NULL, time TEXT NOT NULL, jws TEXT NOT NULL)",
)
"""The SQLite log's layout before versioned migrations."""
OLD_PG_DDL = (
    """CREATE TABLE leaves (seq BIGINT PRIMARY KEY, record TEXT NOT NULL, hash BYTEA NOT NULL,
        time TEXT GENERATED ALWAYS AS ((record::jsonb) ->> 'time') STORED,
        principal TEXT GENERATED ALWAYS AS ((record::jsonb) ->> 'principal') STORED,
        service TEXT GENERATED ALWAYS AS ((record::jsonb) ->> 'service') STORED,
        dataset TEXT GENERATED ALWAYS AS ((record::jsonb) ->> 'dataset') STORED,
        decision TEXT GENERATED ALWAYS AS ((record::jsonb) ->> 'decision') STORED)""",
    "CREATE INDEX leaves_time ON leaves(time)",
    "CREATE INDEX leaves_principal ON leaves(principal, seq)",
    "CREATE INDEX leaves_service ON leaves(service, seq)",
    "CREATE INDEX leaves_dataset ON leaves(dataset, seq)",
    "CREATE TABLE checkpoints (size BIGINT PRIMARY KEY, root TEXT NOT NULL, time TEXT NOT NULL, jws TEXT NOT NULL)",
)
"""The PostgreSQL log's layout before versioned migrations."""
LEAVES = [AuditLeaf.of(event(n, principal=f"p-{n % 2}"), n).encode() for n in range(5)]
ROOT = merkle.root([merkle.leaf_hash(record) for record in LEAVES])
CHECKPOINT = (5, ROOT.hex(), "2026-01-01T00:00:00+00:00", "a.b.c")
Execute = Callable[[str, Sequence[Any]], Any]


@contextlib.contextmanager
def _database(
    backend: str, tmp_path: Path, ddl: Sequence[str]
) -> Iterator[tuple[Callable[[], AuditLogRules], Execute]]:
    """A log database made by `ddl` (nothing, if empty): a factory of logs on it, and a raw
    connection to look at its tables."""
    directory = tmp_path / "audit"
    directory.mkdir()
    if backend == "sqlite":
        with contextlib.closing(sqlite3.connect(directory / "log.sqlite3", isolation_level=None)) as raw:
            for statement in ddl:
                raw.execute(statement)
            yield (lambda: SqliteAuditLog.open(directory)), raw.execute
        return

    assert PG_DSN is not None
    with pg_old_schema() as (schema, db):
        for statement in ddl:
            db.execute(statement)
        yield (lambda: PostgresAuditLog(PG_DSN or "", schema=schema, key_directory=directory)), db.execute


def _stored(raw: Execute) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    leaves = raw("SELECT seq, record, hash FROM leaves ORDER BY seq", ()).fetchall()
    checkpoints = raw("SELECT size, root, time, jws FROM checkpoints ORDER BY size", ()).fetchall()
    return [(seq, record, bytes(digest)) for seq, record, digest in leaves], [tuple(c) for c in checkpoints]


@pytest.mark.parametrize("backend", ["sqlite", ON_POSTGRES])
def test_a_log_of_before_is_migrated_with_its_leaves_intact(backend: str, tmp_path: Path) -> None:
    with _database(backend, tmp_path, OLD_SQLITE_DDL if backend == "sqlite" else OLD_PG_DDL) as (open_log, raw):
        for seq, record in enumerate(LEAVES):
            raw(
                "INSERT INTO leaves (seq, record, hash) VALUES (?, ?, ?)",
                (seq, record.decode(), merkle.leaf_hash(record)),
            )
        raw("INSERT INTO checkpoints VALUES (?, ?, ?, ?)", CHECKPOINT)
        before = _stored(raw)
        log = open_log()
        try:
            assert migrations.applied(raw, "audit") == [1]
            assert _stored(raw) == before
            # The same tree: old leaves prove, the old checkpoint is the latest, and the next
            # leaf is numbered after them.
            assert (log.size(), log.root(5)) == (5, ROOT)
            latest = log.latest_checkpoint()
            assert latest is not None and (latest.size, latest.root) == (5, ROOT.hex())
            assert [leaf.seq for leaf in log.find(LeafFilter(principal="p-1"))] == [1, 3]
            assert log.append_now(event(5)) == 5
        finally:
            log.close()
        again = open_log()  # opening again applies nothing
        again.close()
        assert raw("SELECT count(*) FROM schema_versions WHERE store = ?", ("audit",)).fetchone()[0] == 1
        assert _stored(raw)[0][:5] == before[0]


@pytest.mark.parametrize("backend", ["sqlite", ON_POSTGRES])
def test_a_log_from_a_newer_release_is_refused(backend: str, tmp_path: Path) -> None:
    with _database(backend, tmp_path, ()) as (open_log, raw):
        open_log().close()  # made by this release: version 1
        raw("INSERT INTO schema_versions VALUES (?, ?, ?)", ("audit", 2, "2027-01-01T00:00:00+00:00"))
        with pytest.raises(ConfigurationError, match=r"audit store was written by a newer Veilgate.*schema_versions"):
            open_log()
        assert migrations.applied(raw, "audit") == [1, 2]
