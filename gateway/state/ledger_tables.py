"""The ledger's tables: their layout on each backend, the exact-key read of a batch of
admissions, and the writes it gathers (one statement per table).

SECURITY: only placeholders and fixed names are formatted into SQL here; every value is bound.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from gateway.state import postgres_connections
from gateway.state.migrations import Step

log = logging.getLogger("veilgate.ledger")

# Rowid tables, not WITHOUT ROWID: keys are pseudonyms (hashes), so new rows land at random places
# in the key order. Here the rows and the `until` index (for pruning) grow at their ends and only
# the unique index takes the random inserts; keyed by the key itself, every `until` entry
# repeated the whole key as well. Measured: a third less CPU per admission. Files made before
# keep their layout, which the same statements read and write.
_SQLITE_FIRST = """
CREATE TABLE IF NOT EXISTS counters (
    scope TEXT NOT NULL, window INTEGER NOT NULL, used INTEGER NOT NULL, until REAL NOT NULL,
    UNIQUE (scope, window)
);
CREATE TABLE IF NOT EXISTS members (
    scope TEXT NOT NULL, window INTEGER NOT NULL, item TEXT NOT NULL, until REAL NOT NULL,
    UNIQUE (scope, window, item)
);
CREATE TABLE IF NOT EXISTS answers (
    scope TEXT NOT NULL, window INTEGER NOT NULL, fingerprint TEXT NOT NULL, answer TEXT NOT NULL,
    until REAL NOT NULL,
    UNIQUE (scope, window, fingerprint)
);
CREATE INDEX IF NOT EXISTS counters_until ON counters(until);
CREATE INDEX IF NOT EXISTS members_until ON members(until);
CREATE INDEX IF NOT EXISTS answers_until ON answers(until);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY, at TEXT NOT NULL, kind TEXT NOT NULL, subject TEXT NOT NULL,
    message TEXT NOT NULL, dedupe TEXT UNIQUE
);
CREATE TABLE IF NOT EXISTS billing (
    consumer TEXT NOT NULL, grant_id TEXT NOT NULL, service TEXT NOT NULL, purpose TEXT NOT NULL,
    day TEXT NOT NULL, calls INTEGER NOT NULL, claims INTEGER NOT NULL, billable INTEGER NOT NULL,
    fee_micro_yuan INTEGER NOT NULL,
    PRIMARY KEY (consumer, grant_id, service, purpose, day)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_PG_FIRST = (
    """CREATE TABLE IF NOT EXISTS counters (
        scope TEXT NOT NULL, "window" BIGINT NOT NULL, used BIGINT NOT NULL, until DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (scope, "window"))""",
    """CREATE TABLE IF NOT EXISTS members (
        scope TEXT NOT NULL, "window" BIGINT NOT NULL, item TEXT NOT NULL, until DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (scope, "window", item))""",
    """CREATE TABLE IF NOT EXISTS answers (
        scope TEXT NOT NULL, "window" BIGINT NOT NULL, fingerprint TEXT NOT NULL, answer TEXT NOT NULL,
        until DOUBLE PRECISION NOT NULL, PRIMARY KEY (scope, "window", fingerprint))""",
    "CREATE INDEX IF NOT EXISTS counters_until ON counters(until)",
    "CREATE INDEX IF NOT EXISTS members_until ON members(until)",
    "CREATE INDEX IF NOT EXISTS answers_until ON answers(until)",
    """CREATE TABLE IF NOT EXISTS alerts (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, at TEXT NOT NULL, kind TEXT NOT NULL,
        subject TEXT NOT NULL, message TEXT NOT NULL, dedupe TEXT UNIQUE)""",
    """CREATE TABLE IF NOT EXISTS billing (
        consumer TEXT NOT NULL, grant_id TEXT NOT NULL, service TEXT NOT NULL, purpose TEXT NOT NULL,
        day TEXT NOT NULL, calls BIGINT NOT NULL, claims BIGINT NOT NULL, billable BIGINT NOT NULL,
        fee_micro_yuan BIGINT NOT NULL, PRIMARY KEY (consumer, grant_id, service, purpose, day))""",
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
STORE = "ledger"
SQLITE_STEPS = (Step(1, tuple(sql.strip() for sql in _SQLITE_FIRST.split(";") if sql.strip())),)
PG_STEPS = (Step(1, _PG_FIRST),)
"""The ledger's versioned steps on each backend (`migrations`). Step 1 is the layout of before
versioning, as `CREATE ... IF NOT EXISTS`: a ledger made then is at version 0, and the step
changes nothing it holds."""
TABLES: postgres_connections.Tables = (
    ("counters", ("scope", '"window"', "used", "until")),
    ("members", ("scope", '"window"', "item", "until")),
    ("answers", ("scope", '"window"', "fingerprint", "answer", "until")),
    ("alerts", ("at", "kind", "subject", "message", "dedupe")),
    ("billing", ("consumer", "grant_id", "service", "purpose", "day", "calls", "claims", "billable", "fee_micro_yuan")),
)
"""What an installation's history holds, for `PostgresLedger.import_from` (and `meta`, checked)."""
PG_LOCK = 0x76676C6564676572


class Db(Protocol):
    """What the rules need of a connection: sqlite3's, or `postgres_connections.Db` over psycopg."""

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> Any: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> Any: ...

    def close(self) -> None: ...


EXACT_ROWS = 500
"""Key tuples per read: far below SQLite's limit on bound parameters, for any batch."""
READS = (
    ("c", "NULL", "CAST(t.used AS TEXT)", "counters", ("scope", '"window"')),
    ("m", "t.item", "NULL", "members", ("scope", '"window"', "item")),
    ("a", "t.fingerprint", "t.answer", "answers", ("scope", '"window"', "fingerprint")),
)
"""Per kind of row read by exact key: its tag, its item, its value, its table, its primary key."""


@functools.cache
def exact_sql(counts: tuple[int, int, int], join: str = "CROSS JOIN") -> str:
    """Counters, members and stored answers read by their exact primary keys, as joins with
    VALUES lists: each key is one seek (an IN list per column would seek every combination of
    the columns). Each row comes back as (tag, scope, window, item or fingerprint, value as text).
    `join`: SQLite's CROSS JOIN keeps the VALUES list the outer loop; PostgreSQL plans a JOIN."""
    # SECURITY: only placeholders and fixed names are formatted in; every value is bound.
    parts = []
    for count, (tag, item, value, table, key) in zip(counts, READS, strict=True):
        if not count:
            continue
        rows = ", ".join(["(" + ", ".join("?" * len(key)) + ")"] * count)
        match = " AND ".join(f"t.{column} = v.column{n}" for n, column in enumerate(key, 1))
        selected = f"'{tag}', t.scope, t.\"window\", {item}, {value}"
        parts.append(f"SELECT {selected} FROM (VALUES {rows}) AS v {join} {table} AS t ON {match}")  # noqa: S608
    return " UNION ALL ".join(parts)


def exact_reads(wanted: Wanted, join: str) -> Iterator[tuple[str, list[Any]]]:
    """The reads of the counters, members and stored answers of `wanted`: one (one round trip to
    PostgreSQL) unless there are more keys than `EXACT_ROWS`."""
    lists: list[list[tuple[Any, ...]]] = [list(wanted.counters), list(wanted.members), list(wanted.answers)]
    while any(lists):
        chunks = [keys[:EXACT_ROWS] for keys in lists]
        lists = [keys[EXACT_ROWS:] for keys in lists]
        params = [value for chunk in chunks for row in chunk for value in row]
        yield exact_sql((len(chunks[0]), len(chunks[1]), len(chunks[2])), join), params


def read_exact(conn: Db, wanted: Wanted, join: str = "CROSS JOIN") -> Rows:
    """The rows of `wanted` that exist."""
    found = Rows()
    for sql, params in exact_reads(wanted, join):
        found.add(conn.execute(sql, params).fetchall())
    return found


@dataclass(slots=True)
class Wanted:
    """The keys a batch of admissions may read: dicts as ordered sets, so a key shared by two
    admissions is read once."""

    counters: dict[tuple[str, int], None] = field(default_factory=dict)
    members: dict[tuple[str, int, str], None] = field(default_factory=dict)
    answers: dict[tuple[str, int, str], None] = field(default_factory=dict)


@dataclass(slots=True)
class Rows:
    """The ledger's rows as a batch sees them: read once, then changed by each admission it
    accepts, so the next one is decided as if the earlier ones were already written."""

    used: dict[tuple[str, int], int] = field(default_factory=dict)
    members: set[tuple[str, int, str]] = field(default_factory=set)
    answers: dict[tuple[str, int, str], str] = field(default_factory=dict)

    def add(self, found: Iterable[tuple[Any, ...]]) -> None:
        """Rows of an `exact_sql` read."""
        for tag, scope, window, item, value in found:
            if tag == "c":
                self.used[(scope, int(window))] = int(value)
            elif tag == "m":
                self.members.add((scope, int(window), item))
            else:
                self.answers[(scope, int(window), item)] = value


@dataclass(slots=True)
class Writes:
    """What a batch's accepted admissions write, gathered so that each table takes one statement."""

    counters: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    """(scope, window) -> [increment, end of the window]."""
    members: list[tuple[str, int, str, float]] = field(default_factory=list)
    answers: list[tuple[str, int, str, str, float]] = field(default_factory=list)
    billing: dict[tuple[str, str, str, str, str], list[int]] = field(default_factory=dict)
    """(consumer, grant, service, purpose, day) -> [calls, claims, billable, fee]."""
    alerts: list[tuple[str, str, str, str]] = field(default_factory=list)

    def count(self, scope: str, window: int, increment: int, until: float) -> None:
        if increment:
            self.counters.setdefault((scope, window), [0, until])[0] += increment

    def statements(self) -> list[tuple[str, list[tuple[Any, ...]]]]:
        """One statement per table, with its rows (alerts apart: see `write`)."""
        return [
            (
                "INSERT INTO counters VALUES (?, ?, ?, ?) "
                'ON CONFLICT (scope, "window") DO UPDATE SET used = counters.used + excluded.used',
                [(scope, window, int(n), until) for (scope, window), (n, until) in self.counters.items()],
            ),
            ("INSERT INTO members VALUES (?, ?, ?, ?)", list(self.members)),
            ("INSERT INTO answers VALUES (?, ?, ?, ?, ?)", list(self.answers)),
            (
                "INSERT INTO billing VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (consumer, grant_id, service, purpose, day) DO UPDATE SET "
                "calls = billing.calls + excluded.calls, "
                "claims = billing.claims + excluded.claims, billable = billing.billable + excluded.billable, "
                "fee_micro_yuan = billing.fee_micro_yuan + excluded.fee_micro_yuan",
                [(*key, *sums) for key, sums in self.billing.items()],
            ),
        ]  # fmt: skip

    def write(self, conn: Db) -> None:
        for sql, rows in self.statements():
            conn.executemany(sql, rows)
        for kind, subject, message, dedupe in self.alerts:
            insert_alert(conn, kind, subject, message, dedupe)


ALERT_SQL = "INSERT INTO alerts (at, kind, subject, message, dedupe) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"


def insert_alert(conn: Db, kind: str, subject: str, message: str, dedupe: str | None) -> None:
    """Insert an alert once per `dedupe` key (None: always) and log it."""
    at = datetime.now(UTC).isoformat(timespec="seconds")
    # RETURNING, not rowcount: in PostgreSQL's pipeline mode a statement's rowcount is not known
    # yet, and an alert the dedupe key kept out was logged again on every refusal.
    if conn.execute(ALERT_SQL + " RETURNING id", (at, kind, subject, message, dedupe)).fetchall():
        log.warning("ALERT %s %s: %s", kind, subject, message)
