"""The ledger: rate, quota and probing state that must hold across processes; billing; alerts.

Imports no other leaf. Two backends under one set of rules (`Ledger`): one SQLite file in WAL
mode, shared by the gateway processes of one machine (`SqliteLedger`), or PostgreSQL, shared by
replicas on several machines (`PostgresLedger`). Admissions are applied in transactions that hold
the ledger's write lock (several at a time, each in its own savepoint), so every process sees one
ledger and a limit holds exactly: each check and its increment happen together or not at all. A
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
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from gateway import postgres_db
from gateway.domain.limits import VerificationLimits
from gateway.errors import ConfigurationError, DependencyError, LimitReached
from gateway.group_commit import GroupCommitter, LoopCommitter, Settle, Waiter, resolve, written

_DB_FILE = "ledger.sqlite3"
_PRUNE_EVERY_SECONDS = 60.0
_BATCH_LIMIT = 256
_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (
    scope TEXT NOT NULL, window INTEGER NOT NULL, used INTEGER NOT NULL, until REAL NOT NULL,
    PRIMARY KEY (scope, window)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS members (
    scope TEXT NOT NULL, window INTEGER NOT NULL, item TEXT NOT NULL, until REAL NOT NULL,
    PRIMARY KEY (scope, window, item)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS answers (
    scope TEXT NOT NULL, window INTEGER NOT NULL, fingerprint TEXT NOT NULL, answer TEXT NOT NULL,
    until REAL NOT NULL,
    PRIMARY KEY (scope, window, fingerprint)
) WITHOUT ROWID;
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
    ("c", "CAST(t.used AS TEXT)", "counters", ("scope", '"window"')),
    ("m", "t.item", "members", ("scope", '"window"', "item")),
    ("a", "t.answer", "answers", ("scope", '"window"', "fingerprint")),
)
"""Per kind of row read by exact key: its tag, the value returned, its table, its primary key."""


@functools.cache
def _exact_sql(counts: tuple[int, int, int], join: str = "CROSS JOIN") -> str:
    """Counters, members and stored answers read by their exact primary keys, as joins with
    VALUES lists: each key is one seek (an IN list per column would seek every combination of
    the columns). Each row comes back as (tag, scope or fingerprint, value), the value as text.
    `join`: SQLite's CROSS JOIN keeps the VALUES list the outer loop; PostgreSQL plans a JOIN."""
    # SECURITY: only placeholders and fixed names are formatted in; every value is bound.
    parts = []
    for count, (tag, value, table, key) in zip(counts, _READS, strict=True):
        if not count:
            continue
        rows = ", ".join(["(" + ", ".join("?" * len(key)) + ")"] * count)
        match = " AND ".join(f"t.{column} = v.column{n}" for n, column in enumerate(key, 1))
        found = "t.fingerprint" if table == "answers" else "t.scope"
        parts.append(f"SELECT '{tag}', {found}, {value} FROM (VALUES {rows}) AS v {join} {table} AS t ON {match}")  # noqa: S608
    return " UNION ALL ".join(parts)


def _read_exact(
    conn: Db, wanted: tuple[list[tuple[Any, ...]], ...], join: str = "CROSS JOIN"
) -> list[tuple[str, str, str]]:
    """`wanted`: the keys of counters, members and answers; per row found, ('c', scope, used),
    ('m', scope, item) or ('a', fingerprint, answer)."""
    found: list[tuple[str, str, str]] = []
    lists = list(wanted)
    while any(lists):
        chunks = [keys[:_EXACT_ROWS] for keys in lists]
        lists = [keys[_EXACT_ROWS:] for keys in lists]
        params = [value for chunk in chunks for row in chunk for value in row]
        counts = (len(chunks[0]), len(chunks[1]), len(chunks[2]))
        found += conn.execute(_exact_sql(counts, join), params).fetchall()
    return found


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


_Job = tuple[Callable[[Db], Any], Waiter]


_UNAVAILABLE = "the ledger is unavailable; nothing was released"


def _fail(batch: list[_Job], cause: BaseException) -> None:
    """Nothing of the batch is durable: every caller learns it."""
    for _job, waiter in batch:
        failure = DependencyError(_UNAVAILABLE)
        failure.__cause__ = cause
        resolve(waiter, None, failure)


class Ledger:
    """The rules, whichever database holds them (`SqliteLedger`, `PostgresLedger`).

    Admissions run in group commits: whatever is waiting goes into one transaction that holds
    the ledger's write lock, each admission inside its own savepoint (so a refused one leaves no
    trace), then one COMMIT, and every caller learns its outcome. Admissions in a batch are
    applied in order, each seeing the ones before it. Blocking callers go through a writer
    thread; the request path calls `admit_verification_async`.
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

    def _submit(self, job: Callable[[Db], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        self._writer.put((job, future))
        return future

    def _run(self, job: Callable[[Db], Any]) -> Any:
        return self._submit(job).result()

    def _apply(self, conn: Db, batch: list[_Job]) -> Settle:
        """Each job of a batch in its own savepoint (a refused admission leaves no trace but its
        refusal count); the outcomes reach the callers only once the COMMIT is durable."""
        outcomes: list[tuple[Waiter, Any, BaseException | None]] = []
        for job, waiter in batch:
            conn.execute("SAVEPOINT admission")
            try:
                outcomes.append((waiter, job(conn), None))
            except Exception as exc:  # this admission only: undo it, keep the batch
                conn.execute("ROLLBACK TO admission")
                outcomes.append((waiter, None, exc))
                if isinstance(exc, LimitReached):
                    _note_refusal(conn, exc, time.time())
            conn.execute("RELEASE admission")

        def settle(error: BaseException | None) -> None:
            if error is not None:
                _fail(batch, error)
                return
            for waiter, result, refused in outcomes:
                resolve(waiter, result, refused)
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
        admission: Admission = self._submit(lambda conn: self._admit(conn, request, now)).result()
        return admission

    async def admit_verification_async(self, request: VerificationRequest, *, now: float) -> Admission:
        """The same from the event loop, without blocking it."""
        admission: Admission = await asyncio.wrap_future(self._submit(lambda conn: self._admit(conn, request, now)))
        return admission

    def _admit(self, conn: Db, req: VerificationRequest, now: float) -> Admission:
        """One admission in few statements: all counters read at once, all writes batched."""
        limits = req.limits
        minute, minute_end, minute_left = _window(now, MINUTE)
        day, day_end, day_left = _window(now, DAY)
        probe, probe_end, probe_left = _window(now, limits.probe_window_seconds)
        consumer_rate = f"rate:consumer:{req.consumer}"
        organisation_rate = f"rate:organisation:{req.organisation}"
        quota_scope = f"quota:{req.grant}"
        keys_scope = f"keys:{req.consumer}"
        answer_scope = f"answer:{req.consumer}:{req.service}"

        # Everything this admission may touch, in one read of exact keys: the stored answers of
        # its claims, its counters, and the members of every key it asks about (a repeat's are
        # read and not used: deciding which claims repeat would take a read of its own).
        asked: dict[str, set[str]] = {}
        for claim in req.claims:
            asked.setdefault(claim.key, set()).update(claim.asks)
        ask_scopes = {key: f"asks:{req.consumer}:{key}" for key in asked}
        windows = {consumer_rate: minute, organisation_rate: minute, quota_scope: day, keys_scope: day}
        windows.update(dict.fromkeys(ask_scopes.values(), probe))
        wanted_members = [(keys_scope, day, key) for key in asked]
        wanted_members += [(ask_scopes[key], probe, ask) for key, asks in asked.items() for ask in asks]
        wanted_answers = [(answer_scope, probe, f) for f in {c.fingerprint for c in req.claims}]
        used = dict.fromkeys(windows, 0)
        members: set[tuple[str, str]] = set()
        known: dict[str, str] = {}
        for kind, name, value in _read_exact(conn, (list(windows.items()), wanted_members, wanted_answers), self._join):
            if kind == "c":
                used[name] = int(value)
            elif kind == "m":
                members.add((name, value))
            else:
                known[name] = value

        # Repeats inside the probe window: the stored answer, and not counted again.
        answers: list[str] = []
        fresh: list[ClaimUse] = []
        for claim in req.claims:
            if claim.fingerprint not in known:
                fresh.append(claim)
                known[claim.fingerprint] = claim.answer
            answers.append(known[claim.fingerprint])
        asks_by_key: dict[str, set[str]] = {}
        for claim in fresh:
            asks_by_key.setdefault(claim.key, set()).update(claim.asks)

        # The limits, in a fixed order; the first that trips refuses the whole request.
        who = {"consumer": req.consumer, "grant": req.grant}
        if used[consumer_rate] + 1 > limits.consumer_per_minute:
            message = f"at most {limits.consumer_per_minute} requests a minute per consumer"
            raise LimitReached(message, retry_after_seconds=minute_left, limit="consumer_rate", **who)
        if used[organisation_rate] + 1 > limits.organisation_per_minute:
            message = f"at most {limits.organisation_per_minute} requests a minute per organisation"
            raise LimitReached(message, retry_after_seconds=minute_left, limit="organisation_rate", **who)
        if used[quota_scope] + len(fresh) > req.daily_quota:
            message = f"the grant's daily quota of {req.daily_quota} claims is used up"
            raise LimitReached(message, retry_after_seconds=day_left, limit="quota", **who)
        new_keys = {key for key in asks_by_key if (keys_scope, key) not in members}
        if used[keys_scope] + len(new_keys) > limits.distinct_keys_per_day:
            message = f"at most {limits.distinct_keys_per_day} different entities a day per consumer"
            raise LimitReached(message, retry_after_seconds=day_left, limit="distinct_keys", **who)
        new_asks = {key: {a for a in asks if (ask_scopes[key], a) not in members} for key, asks in asks_by_key.items()}
        for key, asks in new_asks.items():
            if used[ask_scopes[key]] + len(asks) > limits.probe_checks_per_key:
                raise LimitReached(
                    f"at most {limits.probe_checks_per_key} different questions about one entity "
                    f"in {limits.probe_window_seconds} seconds",
                    retry_after_seconds=probe_left,
                    limit="probe",
                    **who,
                )

        # Everything holds: count it all.
        increments = [
            (consumer_rate, minute, 1, minute_end),
            (organisation_rate, minute, 1, minute_end),
            (quota_scope, day, len(fresh), day_end),
            (keys_scope, day, len(new_keys), day_end),
            *((ask_scopes[key], probe, len(asks), probe_end) for key, asks in new_asks.items()),
        ]
        conn.executemany(
            "INSERT INTO counters VALUES (?, ?, ?, ?) "
            'ON CONFLICT (scope, "window") DO UPDATE SET used = counters.used + excluded.used',
            [row for row in increments if row[2]],
        )
        conn.executemany(
            "INSERT INTO members VALUES (?, ?, ?, ?)",
            [(keys_scope, day, k, day_end) for k in new_keys]
            + [(ask_scopes[k], probe, a, probe_end) for k, asks in new_asks.items() for a in asks],
        )
        conn.executemany(
            "INSERT INTO answers VALUES (?, ?, ?, ?, ?)",
            [(answer_scope, probe, c.fingerprint, c.answer, probe_end) for c in fresh],
        )
        today = datetime.fromtimestamp(now, UTC).date().isoformat()
        billable = sum(c.billable for c in fresh)
        conn.execute(
            "INSERT INTO billing VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?) "
            "ON CONFLICT (consumer, grant_id, service, purpose, day) DO UPDATE SET calls = billing.calls + 1, "
            "claims = billing.claims + excluded.claims, billable = billing.billable + excluded.billable, "
            "fee_micro_yuan = billing.fee_micro_yuan + excluded.fee_micro_yuan",
            (req.consumer, req.grant, req.service, req.purpose, today, len(fresh), billable,
             billable * req.fee_micro_yuan_per_claim),
        )  # fmt: skip
        quota_share = ALERT_SHARE * req.daily_quota
        if used[quota_scope] < quota_share <= used[quota_scope] + len(fresh):
            _alert(
                conn, "quota_80", req.grant, f"grant {req.grant} used 80% of its daily quota", f"q80:{req.grant}:{day}"
            )
        if used[consumer_rate] + 1 >= ALERT_SHARE * limits.consumer_per_minute:
            message = f"{req.consumer} is at 80% of its request rate for {req.service}"
            _alert(conn, "rate_80", req.consumer, message, f"r80:{req.consumer}:{minute}")
        consumer_left = limits.consumer_per_minute - used[consumer_rate] - 1
        return Admission(
            tuple(answers),
            len(req.claims) - len(fresh),
            (
                Window("consumer", limits.consumer_per_minute, consumer_left, minute_left, MINUTE),
                Window("quota", req.daily_quota, req.daily_quota - used[quota_scope] - len(fresh), day_left, DAY),
            ),
        )

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
        super().__init__(GroupCommitter("ledger-writer", self._connect, self._apply, limit=_BATCH_LIMIT, fail=_fail))
        self._loop_writer: LoopCommitter[_Job] = LoopCommitter(
            "ledger-commit",
            lambda: self._connect(wait=False),
            self._apply,
            limit=_BATCH_LIMIT,
            fail=_fail,
            busy_timeout_seconds=busy_timeout_seconds,
        )

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
        admission: Admission = await written(
            lambda conn: self._admit(conn, request, now), self._loop_writer, self._writer
        )
        return admission

    def close(self) -> None:
        self._loop_writer.close()
        super().close()


class PostgresLedger(Ledger):
    """PostgreSQL, for gateway replicas on several machines: one ledger, so a limit holds across
    all of them. Each batch holds one transaction-level advisory lock, as SQLite's BEGIN
    IMMEDIATE does: admissions of every replica are applied one batch at a time."""

    def __init__(self, dsn: str, *, schema: str = "public") -> None:
        connect = functools.partial(postgres_db.connect, dsn, schema, name="veilgate-ledger", unavailable=_UNAVAILABLE)
        self._read = postgres_db.Reader(dsn, schema, name="veilgate-ledger", unavailable=_UNAVAILABLE)
        self._read.create_tables("veilgate_ledger", _PG_SCHEMA)
        writer: GroupCommitter[_Job, postgres_db.Db] = GroupCommitter(
            "ledger-writer",
            lambda: postgres_db.Db(connect()),
            self._apply_pipelined,
            limit=_BATCH_LIMIT,
            fail=_fail,
            begin=("BEGIN", f"SELECT pg_advisory_xact_lock({_PG_LOCK})"),  # a constant, not input
        )
        super().__init__(writer)

    def _apply_pipelined(self, conn: postgres_db.Db, batch: list[_Job]) -> Settle:
        """In pipeline mode: statements whose results are not read (the savepoints, the writes)
        travel with the next read instead of waiting for a round trip each."""
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
        super().close()
        self._read.close()


def open_ledger(directory: Path, *, dsn: str | None = None, schema: str = "veilgate") -> Ledger:
    """The ledger as configured: in PostgreSQL when `dsn` is set, else the SQLite file under `directory`."""
    if dsn:
        return PostgresLedger(dsn, schema=schema)
    return SqliteLedger.open(directory)


def _alert(conn: Db, kind: str, subject: str, message: str, dedupe: str | None) -> None:
    """Insert an alert once per `dedupe` key (None: always) and log it."""
    cursor = conn.execute(
        "INSERT INTO alerts (at, kind, subject, message, dedupe) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (datetime.now(UTC).isoformat(timespec="seconds"), kind, subject, message, dedupe),
    )
    if cursor.rowcount:
        log.warning("ALERT %s %s: %s", kind, subject, message)


def _note_refusal(conn: Db, refused: LimitReached, now: float) -> None:
    """Outside the refused admission's savepoint: probing and enumeration limits alert at once;
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
