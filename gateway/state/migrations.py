"""Versioned schema changes: each store lists its steps, and `migrate` applies those a database
has not seen yet, recording each in `schema_versions` (store, version, when).

Runs inside the store's opening transaction, which one process or replica holds at a time, so
two that start together never apply a step twice. A database made before this table existed
is at version 0 for every store: its steps begin with the `CREATE ... IF NOT EXISTS` of the
layout it already has, so applying them to it changes nothing that is there. A database with a
version this code has no step for was written by a newer release: it is refused, not written
with a layout it does not know.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from gateway.errors import ConfigurationError


class Execute(Protocol):
    """A transaction's `execute`: a sqlite3 connection's, or `postgres_connections.Db`'s (both take `?`)."""

    def __call__(self, sql: str, params: Sequence[Any] = (), /) -> Any: ...


@dataclass(frozen=True, slots=True)
class Step:
    version: int
    statements: Sequence[str]
    data: Callable[[Execute], None] | None = field(default=None)
    """Rewrites rows the new layout reads differently (runs after `statements`)."""


POSTGRES_LOCK = "SELECT pg_advisory_xact_lock(hashtext('veilgate_schema_versions'))"
"""Taken first in a PostgreSQL store's opening transaction: the stores of every replica migrate
one at a time, so two never create `schema_versions` (or a store's tables) at once."""

_VERSIONS = """CREATE TABLE IF NOT EXISTS schema_versions (
    store TEXT NOT NULL, version INTEGER NOT NULL, applied_at TEXT NOT NULL, PRIMARY KEY (store, version))"""


def applied(execute: Execute, store: str) -> list[int]:
    execute(_VERSIONS)
    rows = execute("SELECT version FROM schema_versions WHERE store = ? ORDER BY version", (store,)).fetchall()
    return [int(row[0]) for row in rows]


def migrate(execute: Execute, store: str, steps: Sequence[Step]) -> list[int]:
    """Apply the steps of `store` not applied yet, in order; returns the versions applied now."""
    done = set(applied(execute, store))
    known = max((step.version for step in steps), default=0)
    if any(version > known for version in done):
        raise ConfigurationError(
            f"the {store} store was written by a newer Veilgate: its schema_versions name a version above "
            f"{known}, the last this release knows; run that release, or restore a backup made before it"
        )
    now: list[int] = []
    for step in sorted(steps, key=lambda s: s.version):
        if step.version in done:
            continue
        for statement in step.statements:
            execute(statement)
        if step.data is not None:
            step.data(execute)
        execute(
            "INSERT INTO schema_versions VALUES (?, ?, ?)",
            (store, step.version, datetime.now(UTC).isoformat(timespec="seconds")),
        )
        now.append(step.version)
    return now
