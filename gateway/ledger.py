"""The ledger: rate, quota and probing state that must hold across processes; billing; alerts.

Imports no other leaf. Two backends under one set of rules (`Ledger`): one SQLite file in WAL
mode, shared by the gateway processes of one machine (`SqliteLedger`), or PostgreSQL, shared by
replicas on several machines (`PostgresLedger`). Admissions are applied in transactions that hold
the ledger's write lock (a batch at a time: one read of every row the batch may touch, each
admission decided in order against what the earlier ones counted, one write per table), so every
process sees one ledger and a limit holds exactly: each check and its increment happen together or not at all. A
request that trips any limit changes nothing but the refusal count that alerts are raised from.

Windows are fixed and aligned to UTC: the minute for rates, the day for quotas and distinct
keys, `probe_window_seconds` for probing. Rows carry the end of their window and are pruned
after it.

SECURITY: entity keys, fields and supplied values arrive only as pseudonyms (keyed hashes made
by the caller); answers are stored so that a repeated claim gets the same answer without being
counted again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from gateway import postgres_db
from gateway.domain.limits import VerificationLimits
from gateway.errors import ConfigurationError, DependencyError, LimitReached
from gateway.group_commit import GroupCommitter, Settle, Waiter, resolve, sqlite_committers, written

_DB_FILE = "ledger.sqlite3"
_PRUNE_EVERY_SECONDS = 60.0
_BATCH_LIMIT = 256
# Rowid tables, not WITHOUT ROWID: keys are pseudonyms (hashes), so new rows land at random places
# in the key order. Here the rows and the `until` index (for pruning) grow at their ends and only
# the unique index takes the random inserts; keyed by the key itself, every `until` entry
# repeated the whole key as well. Measured: a third less CPU per admission. Files made before
# keep their layout, which the same statements read and write.
_SCHEMA = """
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
_PG_SCHEMA = (
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
_TABLES: postgres_db.Tables = (
    ("counters", ("scope", '"window"', "used", "until")),
    ("members", ("scope", '"window"', "item", "until")),
    ("answers", ("scope", '"window"', "fingerprint", "answer", "until")),
    ("alerts", ("at", "kind", "subject", "message", "dedupe")),
    ("billing", ("consumer", "grant_id", "service", "purpose", "day", "calls", "claims", "billable", "fee_micro_yuan")),
)
"""What an installation's history holds, for `PostgresLedger.import_from` (and `meta`, checked)."""
_PG_LOCK = 0x76676C6564676572
"""The advisory lock every PostgreSQL admission batch holds: one writer at a time, as in SQLite."""
DAY = 86_400
MINUTE = 60
REFUSALS_ALERT_PER_MINUTE = 20
"""A consumer refused by limits more often than this in a minute raises an alert."""
ALERTS_KEPT_DAYS = 400
"""Alerts older than this are pruned: a year of early warnings, and a margin for the annual report."""
ALERT_SHARE = 0.8
"""A grant's quota or a consumer's request rate used to this share raises an alert."""
log = logging.getLogger("veilgate.ledger")


@dataclass(frozen=True, slots=True)
class ClaimUse:
    """One claim as the ledger sees it: pseudonyms only."""

    fingerprint: str
    """The whole question (service, key, every field and supplied value): equal means repeated."""
    key: str
    asks: tuple[str, ...]
    """One pseudonym per field asked, with its supplied value or threshold."""
    answer: str
    """The answer to store if this claim is new (canonical JSON, no record value)."""
    billable: bool


@dataclass(frozen=True, slots=True)
class Window:
    """A limit's state after this request, for the RateLimit response headers."""

    name: str
    limit: int
    remaining: int
    reset_seconds: int
    window_seconds: int


@dataclass(frozen=True, slots=True)
class Admission:
    answers: tuple[str, ...]
    """Per claim: the stored answer of a repeat, else the new one."""
    repeats: int
    windows: tuple[Window, ...]


@dataclass(frozen=True, slots=True)
class VerificationRequest:
    consumer: str
    organisation: str
    grant: str
    service: str
    purpose: str
    limits: VerificationLimits
    daily_quota: int
    claims: Sequence[ClaimUse]
    fee_micro_yuan_per_claim: int = 0
    """The price of one billable claim at admission time, in millionths of a yuan (exact)."""


@dataclass(frozen=True, slots=True)
class BillingRow:
    consumer: str
    grant: str
    service: str
    purpose: str
    day: str
    calls: int
    claims: int
    billable: int
    fee_micro_yuan: int


_EXACT_ROWS = 500
"""Key tuples per read: far below SQLite's limit on bound parameters, for any batch."""
_READS = (
    ("c", "NULL", "CAST(t.used AS TEXT)", "counters", ("scope", '"window"')),
    ("m", "t.item", "NULL", "members", ("scope", '"window"', "item")),
    ("a", "t.fingerprint", "t.answer", "answers", ("scope", '"window"', "fingerprint")),
)
"""Per kind of row read by exact key: its tag, its item, its value, its table, its primary key."""


@functools.cache
def _exact_sql(counts: tuple[int, int, int], join: str = "CROSS JOIN") -> str:
    """Counters, members and stored answers read by their exact primary keys, as joins with
    VALUES lists: each key is one seek (an IN list per column would seek every combination of
    the columns). Each row comes back as (tag, scope, window, item or fingerprint, value as text).
    `join`: SQLite's CROSS JOIN keeps the VALUES list the outer loop; PostgreSQL plans a JOIN."""
    # SECURITY: only placeholders and fixed names are formatted in; every value is bound.
    parts = []
    for count, (tag, item, value, table, key) in zip(counts, _READS, strict=True):
        if not count:
            continue
        rows = ", ".join(["(" + ", ".join("?" * len(key)) + ")"] * count)
        match = " AND ".join(f"t.{column} = v.column{n}" for n, column in enumerate(key, 1))
        selected = f"'{tag}', t.scope, t.\"window\", {item}, {value}"
        parts.append(f"SELECT {selected} FROM (VALUES {rows}) AS v {join} {table} AS t ON {match}")  # noqa: S608
    return " UNION ALL ".join(parts)


def _exact_reads(wanted: _Wanted, join: str) -> Iterator[tuple[str, list[Any]]]:
    """The reads of the counters, members and stored answers of `wanted`: one (one round trip to
    PostgreSQL) unless there are more keys than `_EXACT_ROWS`."""
    lists: list[list[tuple[Any, ...]]] = [list(wanted.counters), list(wanted.members), list(wanted.answers)]
    while any(lists):
        chunks = [keys[:_EXACT_ROWS] for keys in lists]
        lists = [keys[_EXACT_ROWS:] for keys in lists]
        params = [value for chunk in chunks for row in chunk for value in row]
        yield _exact_sql((len(chunks[0]), len(chunks[1]), len(chunks[2])), join), params


def _read_exact(conn: Db, wanted: _Wanted, join: str = "CROSS JOIN") -> _Rows:
    """The rows of `wanted` that exist."""
    found = _Rows()
    for sql, params in _exact_reads(wanted, join):
        found.add(conn.execute(sql, params).fetchall())
    return found


@dataclass(slots=True)
class _Wanted:
    """The keys a batch of admissions may read: dicts as ordered sets, so a key shared by two
    admissions is read once."""

    counters: dict[tuple[str, int], None] = field(default_factory=dict)
    members: dict[tuple[str, int, str], None] = field(default_factory=dict)
    answers: dict[tuple[str, int, str], None] = field(default_factory=dict)


@dataclass(slots=True)
class _Rows:
    """The ledger's rows as a batch sees them: read once, then changed by each admission it
    accepts, so the next one is decided as if the earlier ones were already written."""

    used: dict[tuple[str, int], int] = field(default_factory=dict)
    members: set[tuple[str, int, str]] = field(default_factory=set)
    answers: dict[tuple[str, int, str], str] = field(default_factory=dict)

    def add(self, found: Iterable[tuple[Any, ...]]) -> None:
        """Rows of an `_exact_sql` read."""
        for tag, scope, window, item, value in found:
            if tag == "c":
                self.used[(scope, int(window))] = int(value)
            elif tag == "m":
                self.members.add((scope, int(window), item))
            else:
                self.answers[(scope, int(window), item)] = value


@dataclass(slots=True)
class _Writes:
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
            _alert(conn, kind, subject, message, dedupe)


def _window(now: float, seconds: int) -> tuple[int, float, int]:
    """(window number, end time, seconds until it ends)."""
    number = int(now // seconds)
    end = float((number + 1) * seconds)
    return number, end, max(1, math.ceil(end - now))


class Db(Protocol):
    """What the rules need of a connection: sqlite3's, or `postgres_db.Db` over psycopg."""

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> Any: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> Any: ...

    def close(self) -> None: ...


_Job = tuple["Callable[[Db], Any] | _Admit", Waiter]


_UNAVAILABLE = "the ledger is unavailable; nothing was released"


def _fail(batch: list[_Job], cause: BaseException) -> None:
    """Nothing of the batch is durable: every caller learns it."""
    for _job, waiter in batch:
        failure = DependencyError(_UNAVAILABLE)
        failure.__cause__ = cause
        resolve(waiter, None, failure)


class _Admit:
    """One admission waiting in a batch: its windows and the names of its limits' state."""

    __slots__ = (
        "answers",
        "asks",
        "consumer_rate",
        "day",
        "keys",
        "minute",
        "now",
        "organisation_rate",
        "probe",
        "quota",
        "request",
    )

    def __init__(self, request: VerificationRequest, now: float) -> None:
        consumer = request.consumer
        self.request, self.now = request, now
        self.minute = _window(now, MINUTE)
        self.day = _window(now, DAY)
        self.probe = _window(now, request.limits.probe_window_seconds)
        self.consumer_rate = f"rate:consumer:{consumer}"
        self.organisation_rate = f"rate:organisation:{request.organisation}"
        self.quota = f"quota:{request.grant}"
        self.keys = f"keys:{consumer}"
        self.answers = f"answer:{consumer}:{request.service}"
        self.asks: dict[str, str] = {claim.key: f"asks:{consumer}:{claim.key}" for claim in request.claims}
        """Per entity asked about: the scope of its probing limit."""

    def want(self, wanted: _Wanted) -> None:
        """Everything this admission may read: its counters, the members of every key it asks
        about, and the stored answers of its claims (a repeat's members are read and not used:
        deciding which claims repeat would take a read of its own)."""
        minute, day, probe = self.minute[0], self.day[0], self.probe[0]
        for scope, window in ((self.consumer_rate, minute), (self.organisation_rate, minute), (self.quota, day),
                              (self.keys, day), *((scope, probe) for scope in self.asks.values())):  # fmt: skip
            wanted.counters[(scope, window)] = None
        for claim in self.request.claims:
            wanted.members[(self.keys, day, claim.key)] = None
            for ask in claim.asks:
                wanted.members[(self.asks[claim.key], probe, ask)] = None
            wanted.answers[(self.answers, probe, claim.fingerprint)] = None

    def decide(self, rows: _Rows, writes: _Writes) -> Admission:
        """Admit against `rows` (changing them and adding to `writes`), or raise LimitReached
        naming the first limit that trips, having changed nothing."""
        req, limits = self.request, self.request.limits
        (minute, minute_end, minute_left), (day, day_end, day_left) = self.minute, self.day
        probe, probe_end, probe_left = self.probe

        def used(scope: str, window: int) -> int:
            return rows.used.get((scope, window), 0)

        # Repeats inside the probe window: the stored answer, and not counted again.
        answers: list[str] = []
        fresh: dict[str, ClaimUse] = {}
        for claim in req.claims:
            stored = rows.answers.get((self.answers, probe, claim.fingerprint))
            if stored is None:
                stored = fresh.setdefault(claim.fingerprint, claim).answer
            answers.append(stored)
        asks_by_key: dict[str, set[str]] = {}
        for claim in fresh.values():
            asks_by_key.setdefault(claim.key, set()).update(claim.asks)

        # The limits, in a fixed order; the first that trips refuses the whole request.
        who = {"consumer": req.consumer, "grant": req.grant}
        consumer_used, quota_used = used(self.consumer_rate, minute), used(self.quota, day)
        if consumer_used + 1 > limits.consumer_per_minute:
            message = f"at most {limits.consumer_per_minute} requests a minute per consumer"
            raise LimitReached(message, retry_after_seconds=minute_left, limit="consumer_rate", **who)
        if used(self.organisation_rate, minute) + 1 > limits.organisation_per_minute:
            message = f"at most {limits.organisation_per_minute} requests a minute per organisation"
            raise LimitReached(message, retry_after_seconds=minute_left, limit="organisation_rate", **who)
        if quota_used + len(fresh) > req.daily_quota:
            message = f"the grant's daily quota of {req.daily_quota} claims is used up"
            raise LimitReached(message, retry_after_seconds=day_left, limit="quota", **who)
        new_keys = [key for key in asks_by_key if (self.keys, day, key) not in rows.members]
        if used(self.keys, day) + len(new_keys) > limits.distinct_keys_per_day:
            message = f"at most {limits.distinct_keys_per_day} different entities a day per consumer"
            raise LimitReached(message, retry_after_seconds=day_left, limit="distinct_keys", **who)
        new_asks = {
            key: [a for a in asks if (self.asks[key], probe, a) not in rows.members]
            for key, asks in asks_by_key.items()
        }
        for key, asks in new_asks.items():
            if used(self.asks[key], probe) + len(asks) > limits.probe_checks_per_key:
                raise LimitReached(
                    f"at most {limits.probe_checks_per_key} different questions about one entity "
                    f"in {limits.probe_window_seconds} seconds",
                    retry_after_seconds=probe_left,
                    limit="probe",
                    **who,
                )

        # Everything holds: count it all.
        def count(scope: str, window: int, increment: int, until: float) -> None:
            if increment:
                rows.used[(scope, window)] = used(scope, window) + increment
                writes.count(scope, window, increment, until)

        def add(scope: str, window: int, item: str, until: float) -> None:
            rows.members.add((scope, window, item))
            writes.members.append((scope, window, item, until))

        count(self.consumer_rate, minute, 1, minute_end)
        count(self.organisation_rate, minute, 1, minute_end)
        count(self.quota, day, len(fresh), day_end)
        count(self.keys, day, len(new_keys), day_end)
        for key in new_keys:
            add(self.keys, day, key, day_end)
        for key, asks in new_asks.items():
            count(self.asks[key], probe, len(asks), probe_end)
            for ask in asks:
                add(self.asks[key], probe, ask, probe_end)
        for claim in fresh.values():
            rows.answers[(self.answers, probe, claim.fingerprint)] = claim.answer
            writes.answers.append((self.answers, probe, claim.fingerprint, claim.answer, probe_end))
        billable = sum(c.billable for c in fresh.values())
        today = datetime.fromtimestamp(self.now, UTC).date().isoformat()
        sums = writes.billing.setdefault((req.consumer, req.grant, req.service, req.purpose, today), [0, 0, 0, 0])
        for n, value in enumerate((1, len(fresh), billable, billable * req.fee_micro_yuan_per_claim)):
            sums[n] += value
        if quota_used < ALERT_SHARE * req.daily_quota <= quota_used + len(fresh):
            message = f"grant {req.grant} used 80% of its daily quota"
            writes.alerts.append(("quota_80", req.grant, message, f"q80:{req.grant}:{day}"))
        if consumer_used + 1 >= ALERT_SHARE * limits.consumer_per_minute:
            message = f"{req.consumer} is at 80% of its request rate for {req.service}"
            writes.alerts.append(("rate_80", req.consumer, message, f"r80:{req.consumer}:{minute}"))
        return Admission(
            tuple(answers),
            len(req.claims) - len(fresh),
            (
                Window("consumer", limits.consumer_per_minute, limits.consumer_per_minute - consumer_used - 1,
                       minute_left, MINUTE),
                Window("quota", req.daily_quota, req.daily_quota - quota_used - len(fresh), day_left, DAY),
            ),
        )  # fmt: skip


_Outcome = tuple[Waiter, Any, BaseException | None]


def _wanted(admissions: list[tuple[_Admit, Waiter]]) -> _Wanted:
    wanted = _Wanted()
    for admit, _waiter in admissions:
        admit.want(wanted)
    return wanted


def _decide(
    admissions: list[tuple[_Admit, Waiter]], rows: _Rows
) -> tuple[list[_Outcome], _Writes, list[tuple[LimitReached, float]]]:
    """Each admission in order against `rows`: the outcomes, what the admitted ones write, and
    the refusals (with their time) whose counts are still to be noted."""
    outcomes: list[_Outcome] = []
    writes = _Writes()
    refusals: list[tuple[LimitReached, float]] = []
    for admit, waiter in admissions:
        try:
            outcomes.append((waiter, admit.decide(rows, writes), None))
        except Exception as exc:  # this admission only: it changed nothing
            outcomes.append((waiter, None, exc))
            if isinstance(exc, LimitReached):
                refusals.append((exc, admit.now))
    return outcomes, writes, refusals


class Ledger:
    """The rules, whichever database holds them (`SqliteLedger`, `PostgresLedger`).

    Admissions run in group commits: whatever is waiting goes into one transaction that holds
    the ledger's write lock, then one COMMIT, and every caller learns its outcome. Admissions in
    a batch are decided in order, each seeing the ones before it, and a refused one writes
    nothing but its refusal count. Blocking callers go through a writer thread; the request
    path calls `admit_verification_async`.
    """

    _join = "JOIN"
    """How the exact-key read joins its VALUES list to a table (`_exact_sql`)."""

    def __init__(self, writer: GroupCommitter[_Job, Any]) -> None:
        self._writer = writer
        self._pruned_at = time.monotonic()

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:  # pragma: no cover
        """A read outside the writer (reports, alerts): each backend has its own connection."""
        raise NotImplementedError

    # -- the writer --------------------------------------------------------------------------

    def _submit(self, job: Callable[[Db], Any] | _Admit) -> Future[Any]:
        future: Future[Any] = Future()
        self._writer.put((job, future))
        return future

    def _run(self, job: Callable[[Db], Any]) -> Any:
        return self._submit(job).result()

    def _apply(self, conn: Db, batch: list[_Job]) -> Settle:
        """A batch in one transaction; the outcomes reach the callers only once the COMMIT is durable.

        Admissions are decided together: one read of every row they may touch, each decided in
        order against what the earlier ones changed, then one write per table. Nothing is
        written for a refused one (the limits are checked before anything is counted) but its
        refusal count. Other jobs run first, each in its own savepoint.
        """
        outcomes: list[_Outcome] = []
        admissions: list[tuple[_Admit, Waiter]] = []
        for job, waiter in batch:
            if isinstance(job, _Admit):
                admissions.append((job, waiter))
                continue
            conn.execute("SAVEPOINT job")
            try:
                outcomes.append((waiter, job(conn), None))
            except Exception as exc:  # this job only: undo it, keep the batch
                conn.execute("ROLLBACK TO job")
                outcomes.append((waiter, None, exc))
            conn.execute("RELEASE job")
        if admissions:
            rows = _read_exact(conn, _wanted(admissions), self._join)
            decided, writes, refusals = _decide(admissions, rows)
            outcomes += decided
            writes.write(conn)
            for refused, now in refusals:
                _note_refusal(conn, refused, now)
        return self._settle(batch, outcomes)

    def _settle(self, batch: list[_Job], outcomes: list[_Outcome], after: Callable[[], None] = lambda: None) -> Settle:
        """How a batch ends: its callers learn their outcomes once the COMMIT is durable (then
        `after` runs), or all learn that nothing of it is."""

        def settle(error: BaseException | None) -> None:
            if error is not None:
                _fail(batch, error)
                return
            for waiter, result, refused in outcomes:
                resolve(waiter, result, refused)
            after()
            if time.monotonic() - self._pruned_at >= _PRUNE_EVERY_SECONDS:
                self._pruned_at = time.monotonic()
                self._submit(lambda conn: self._delete_ended(conn, time.time()))

        return settle

    def close(self) -> None:
        self._writer.close()

    def bind_pseudonyms(self, key_id: str) -> None:
        """Refuse a ledger written with pseudonyms of another subject secret.

        Every key, question and claim reaches the ledger as a pseudonym. A process whose secret
        differs (a replica set up on its own) would make other pseudonyms for the same entity,
        and the distinct-key and probing limits would count each entity once per secret. The
        first process records which secret it uses (`AuditLog.pseudonym_key_id`); the others
        must match it.
        """

        def bind(conn: Db) -> str:
            conn.execute("INSERT INTO meta VALUES ('pseudonym_key', ?) ON CONFLICT DO NOTHING", (key_id,))
            (bound,) = conn.execute("SELECT value FROM meta WHERE name = 'pseudonym_key'").fetchone()
            return str(bound)

        bound = self._run(bind)
        if bound != key_id:
            raise ConfigurationError(
                "this gateway's subject secret (state/audit/subject.key) is not the one the ledger was written "
                "with: copy it from the gateway that first used this ledger, or the verification limits "
                "would count every entity once per secret"
            )

    # -- admissions --------------------------------------------------------------------------

    def admit_verification(self, request: VerificationRequest, *, now: float) -> Admission:
        """Check every limit and count this request and its new claims, atomically.

        Raises RateLimited (with Retry-After) naming the first limit that trips; then nothing
        is counted. Repeated claims (same fingerprint in the probe window) get their stored
        answer and are not counted again.
        """
        admission: Admission = self._submit(_Admit(request, now)).result()
        return admission

    async def admit_verification_async(self, request: VerificationRequest, *, now: float) -> Admission:
        """The same from the event loop, without blocking it."""
        admission: Admission = await asyncio.wrap_future(self._submit(_Admit(request, now)))
        return admission

    def usage(self, grant: str) -> list[tuple[str, str, str, int, int, int]]:
        """Metering rows of a grant: (service, purpose, day, calls, claims, billable claims)."""
        rows = self._rows(
            "SELECT service, purpose, day, SUM(calls), SUM(claims), SUM(billable) FROM billing "
            "WHERE grant_id = ? GROUP BY service, purpose, day ORDER BY day, service",
            (grant,),
        )
        return [(str(a), str(b), str(c), int(d), int(e), int(f)) for a, b, c, d, e, f in rows]

    def raise_alert(self, kind: str, subject: str, message: str) -> None:
        """Record an alert for administrators (a failed policy reload, say), and log it."""
        self._run(lambda conn: _alert(conn, kind, subject, message, None))

    def alerts(self, since: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        rows = self._rows(
            "SELECT id, at, kind, subject, message FROM alerts WHERE at >= ? ORDER BY id DESC LIMIT ?",
            (since or "", limit),
        )
        return [{"id": i, "at": at, "kind": k, "subject": sub, "message": m} for i, at, k, sub, m in rows]

    def monthly_usage(self) -> list[tuple[str, str, int, int]]:
        """Per service and month (YYYY-MM): calls and counted claims, every grant together."""
        rows = self._rows(
            "SELECT service, substr(day, 1, 7) AS month, SUM(calls), SUM(claims) FROM billing "
            "GROUP BY service, month ORDER BY month, service"
        )
        return [(str(a), str(b), int(c), int(d)) for a, b, c, d in rows]

    def billing(self, since: str, until: str, consumer: str | None = None) -> list[BillingRow]:
        """Billing rows of UTC days `since` to `until` (inclusive, YYYY-MM-DD), of one consumer or all."""
        sql = "SELECT * FROM billing WHERE day >= ? AND day <= ?"
        params: tuple[str, ...] = (since, until)
        if consumer is not None:
            sql, params = sql + " AND consumer = ?", (*params, consumer)
        rows = self._rows(sql + " ORDER BY consumer, day, grant_id, service", params)
        return [BillingRow(*row) for row in rows]

    def prune(self, now: float) -> None:
        """Drop rows whose window ended; billing is kept."""
        self._run(lambda conn: self._delete_ended(conn, now))

    @staticmethod
    def _delete_ended(conn: Db, now: float) -> None:
        for table in ("counters", "members", "answers"):
            conn.execute(f"DELETE FROM {table} WHERE until < ?", (now,))  # noqa: S608 - fixed table names
        kept_since = datetime.fromtimestamp(now - ALERTS_KEPT_DAYS * DAY, UTC).isoformat(timespec="seconds")
        conn.execute("DELETE FROM alerts WHERE at < ?", (kept_since,))


class SqliteLedger(Ledger):
    """One SQLite file in WAL mode: the processes of one machine share it, BEGIN IMMEDIATE
    orders them. The request path writes from the event loop, with only the COMMIT in a thread
    (`group_commit.LoopCommitter`)."""

    _join = "CROSS JOIN"

    def __init__(self, path: Path, *, busy_timeout_seconds: float = 30.0) -> None:
        self._path = path
        self._timeout = busy_timeout_seconds
        self._local = threading.local()
        writer, self._loop_writer = sqlite_committers(
            "ledger",
            lambda wait: self._connect(wait=wait),
            self._apply,
            limit=_BATCH_LIMIT,
            fail=_fail,
            busy_timeout_seconds=busy_timeout_seconds,
        )
        super().__init__(writer)

    @classmethod
    def open(cls, directory: Path, *, busy_timeout_seconds: float = 30.0) -> SqliteLedger:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / _DB_FILE
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        ledger = cls(path, busy_timeout_seconds=busy_timeout_seconds)
        conn = ledger._conn()
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(_SCHEMA)
        return ledger

    @property
    def path(self) -> Path:
        return self._path

    def _connect(self, *, wait: bool = True) -> sqlite3.Connection:
        """`wait=False`: for the event loop, which must never sleep on the lock (LoopCommitter)."""
        timeout = self._timeout if wait else 0.0
        conn = sqlite3.connect(self._path, timeout=timeout, isolation_level=None, check_same_thread=wait)
        conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")  # an int, not input
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    def _conn(self) -> sqlite3.Connection:
        """A reading connection per thread: sqlite3 connections are not shared across threads."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self._conn().execute(sql, params).fetchall()
        return rows

    async def admit_verification_async(self, request: VerificationRequest, *, now: float) -> Admission:
        """Applied on the loop, committed by a thread (LoopCommitter)."""
        admission: Admission = await written(_Admit(request, now), self._loop_writer, self._writer)
        return admission

    def close(self) -> None:
        self._loop_writer.close()
        super().close()


class PostgresLedger(Ledger):
    """PostgreSQL, for gateway replicas on several machines: one ledger, so a limit holds across
    all of them. Each batch holds one transaction-level advisory lock, as SQLite's BEGIN
    IMMEDIATE does: admissions of every replica are applied one batch at a time."""

    def __init__(self, dsn: str, *, schema: str = "public") -> None:
        self._read = postgres_db.Reader(dsn, schema, name="veilgate-ledger", unavailable=_UNAVAILABLE)
        self._read.create_tables("veilgate_ledger", _PG_SCHEMA)
        writer, self._loop_writer = postgres_db.committers(
            dsn, schema, name="veilgate-ledger", unavailable=_UNAVAILABLE, lock=_PG_LOCK,
            apply=self._apply_pipelined, apply_on_loop=self._admit_on_loop, fail=_fail, limit=_BATCH_LIMIT,
        )  # fmt: skip
        super().__init__(writer)

    async def admit_verification_async(self, request: VerificationRequest, *, now: float) -> Admission:
        """Decided and written on the loop (`AsyncCommitter`)."""
        admission: Admission = await written(_Admit(request, now), self._loop_writer, self._writer)
        return admission

    async def _admit_on_loop(self, conn: postgres_db.AsyncDb, batch: list[_Job]) -> Settle:
        """`_apply` for a batch of admissions only, awaited: one read, the decisions, the writes.
        Refusal counts are noted by the writer thread after the COMMIT (they
        only feed alerts)."""
        admissions = [(job, waiter) for job, waiter in batch if isinstance(job, _Admit)]
        rows = _Rows()
        for sql, params in _exact_reads(_wanted(admissions), self._join):
            rows.add(await conn.rows(sql, params))
        outcomes, writes, refusals = _decide(admissions, rows)
        for sql, values in writes.statements():  # sent with the COMMIT (the committer's pipeline)
            await conn.executemany(sql, values)
        for kind, subject, message, dedupe in writes.alerts:
            at = datetime.now(UTC).isoformat(timespec="seconds")
            if await conn.rows(_ALERT_SQL + " RETURNING id", (at, kind, subject, message, dedupe)):
                log.warning("ALERT %s %s: %s", kind, subject, message)

        def note_refusals() -> None:
            for refused, when in refusals:
                self._submit(functools.partial(_note_refusal, refused=refused, now=when))

        return self._settle(batch, outcomes, note_refusals)

    def _apply_pipelined(self, conn: postgres_db.Db, batch: list[_Job]) -> Settle:
        """In pipeline mode: the batch's writes travel together to the COMMIT instead of waiting
        for a round trip each; its one read is its one other round trip."""
        with conn.pipeline():
            return self._apply(conn, batch)

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._read.rows(sql, params)

    def import_from(self, source: Path) -> int | None:
        """Copy an installation's SQLite ledger here, if this one is empty (else None)."""
        with self._read.transaction() as db:
            db.execute("SELECT pg_advisory_xact_lock(?)", (_PG_LOCK,))  # with the batches of every replica
            if not postgres_db.is_empty(db, _TABLES):
                return None
            with contextlib.closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as local:
                bound = local.execute("SELECT value FROM meta WHERE name = 'pseudonym_key'").fetchone()
            if bound is not None:
                db.execute("INSERT INTO meta VALUES ('pseudonym_key', ?) ON CONFLICT DO NOTHING", (bound[0],))
                (here,) = db.execute("SELECT value FROM meta WHERE name = 'pseudonym_key'").fetchone()
                if here != bound[0]:
                    raise ConfigurationError("this ledger was written with pseudonyms of another subject secret")
            return postgres_db.copy_tables(db, source, _TABLES)

    def close(self) -> None:
        self._loop_writer.close()
        super().close()
        self._read.close()


def open_ledger(directory: Path, *, dsn: str | None = None, schema: str = "veilgate") -> Ledger:
    """The ledger as configured: in PostgreSQL when `dsn` is set, else the SQLite file under `directory`."""
    if dsn:
        return PostgresLedger(dsn, schema=schema)
    return SqliteLedger.open(directory)


_ALERT_SQL = "INSERT INTO alerts (at, kind, subject, message, dedupe) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"


def _alert(conn: Db, kind: str, subject: str, message: str, dedupe: str | None) -> None:
    """Insert an alert once per `dedupe` key (None: always) and log it."""
    cursor = conn.execute(_ALERT_SQL, (datetime.now(UTC).isoformat(timespec="seconds"), kind, subject, message, dedupe))
    if cursor.rowcount:
        log.warning("ALERT %s %s: %s", kind, subject, message)


def _note_refusal(conn: Db, refused: LimitReached, now: float) -> None:
    """After the batch's writes (a refused admission wrote nothing): probing and enumeration limits alert at once;
    a burst of refusals of one consumer alerts too."""
    minute, minute_end, _left = _window(now, MINUTE)
    day = int(now // DAY)
    if refused.limit in ("probe", "distinct_keys", "quota"):
        subject = refused.grant if refused.limit == "quota" else refused.consumer
        _alert(conn, f"{refused.limit}_limit", subject, refused.detail, f"{refused.limit}:{subject}:{day}")
    scope = f"refusals:{refused.consumer}"
    conn.execute(
        'INSERT INTO counters VALUES (?, ?, 1, ?) ON CONFLICT (scope, "window") DO UPDATE SET used = counters.used + 1',
        (scope, minute, minute_end),
    )
    (count,) = conn.execute('SELECT used FROM counters WHERE scope = ? AND "window" = ?', (scope, minute)).fetchone()
    if count > REFUSALS_ALERT_PER_MINUTE:
        message = f"{refused.consumer} was refused {count} times this minute"
        _alert(conn, "refusal_burst", refused.consumer, message, f"burst:{refused.consumer}:{minute}")
