"""The ledger's admission decisions: which rows an admission reads, and whether it is admitted
against them (every limit in a fixed order; the first that trips refuses the whole request,
which then counts nothing but its refusal).

Windows are fixed and aligned to UTC: the minute for rates, the day for quotas and distinct
keys, `probe_window_seconds` for probing. Rows carry the end of their window and are pruned
after it. Pure decisions over `Rows`; only `note_refusal` touches a connection.
"""

from __future__ import annotations

import functools
import math
from datetime import UTC, datetime
from typing import Any

from gateway.errors import LimitReached
from gateway.state.group_commit import Waiter
from gateway.state.ledger_tables import Db, Rows, Wanted, Writes, insert_alert
from gateway.state.ports import Admission, ClaimUse, VerificationRequest, Window

DAY = 86_400
MINUTE = 60
REFUSALS_ALERT_PER_MINUTE = 20
"""A consumer refused by limits more often than this in a minute raises an alert."""
ALERTS_KEPT_DAYS = 400
"""Alerts older than this are pruned: a year of early warnings, and a margin for the annual report."""
ALERT_SHARE = 0.8


def window_of(now: float, seconds: int) -> tuple[int, float, int]:
    """(window number, end time, seconds until it ends)."""
    number = int(now // seconds)
    end = float((number + 1) * seconds)
    return number, end, max(1, math.ceil(end - now))


@functools.lru_cache(maxsize=4)
def _day_text(day: int) -> str:
    """The UTC date of day number `day`, as billing rows name it."""
    return datetime.fromtimestamp(day * DAY, UTC).date().isoformat()


def presumed(request: VerificationRequest) -> Admission:
    """The admission `Admit.decide` makes of `request` when none of its claims was answered
    before in its probe window, as almost none is: each claim the answer of the first claim with
    its fingerprint, the others repeats. No windows: only the ledger's rows can tell them."""
    first: dict[str, str] = {}
    answers = tuple(first.setdefault(claim.fingerprint, claim.answer) for claim in request.claims)
    return Admission(answers, len(request.claims) - len(first), ())


def as_presumed(admission: Admission, presumption: Admission) -> bool:
    """Whether what a release is built from (`answers`, `repeats`) is as presumed."""
    return admission.answers == presumption.answers and admission.repeats == presumption.repeats


class Admit:
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
        "today",
    )

    def __init__(self, request: VerificationRequest, now: float) -> None:
        consumer = request.consumer
        self.request, self.now = request, now
        self.minute = window_of(now, MINUTE)
        self.day = window_of(now, DAY)
        self.probe = window_of(now, request.limits.probe_window_seconds)
        self.consumer_rate = f"rate:consumer:{consumer}"
        self.organisation_rate = f"rate:organisation:{request.organisation}"
        self.quota = f"quota:{request.grant}"
        self.keys = f"keys:{consumer}"
        self.answers = f"answer:{consumer}:{request.service}"
        self.asks: dict[str, str] = {claim.key: f"asks:{consumer}:{claim.key}" for claim in request.claims}
        """Per entity asked about: the scope of its probing limit."""
        self.today = _day_text(self.day[0])

    def want(self, wanted: Wanted) -> None:
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

    def decide(self, rows: Rows, writes: Writes) -> Admission:
        """Admit against `rows` (changing them and adding to `writes`), or raise LimitReached
        naming the first limit that trips, having changed nothing.

        Runs inside the ledger's write transaction for every admission of a batch, so it reads
        the rows' dicts directly and builds only what it writes."""
        req, limits = self.request, self.request.limits
        (minute, minute_end, minute_left), (day, day_end, day_left) = self.minute, self.day
        probe, probe_end, probe_left = self.probe
        used, members, stored_answers = rows.used.get, rows.members, rows.answers
        answer_scope, keys_scope, asks_of = self.answers, self.keys, self.asks

        # Repeats inside the probe window: the stored answer, and not counted again.
        answers: list[str] = []
        fresh: dict[str, ClaimUse] = {}
        for claim in req.claims:
            stored = stored_answers.get((answer_scope, probe, claim.fingerprint))
            if stored is None:
                stored = fresh.setdefault(claim.fingerprint, claim).answer
            answers.append(stored)
        asks_by_key: dict[str, set[str]] = {}
        for claim in fresh.values():
            asks_by_key.setdefault(claim.key, set()).update(claim.asks)

        # The limits, in a fixed order; the first that trips refuses the whole request.
        consumer_used = used((self.consumer_rate, minute), 0)
        quota_used = used((self.quota, day), 0)
        if consumer_used + 1 > limits.consumer_per_minute:
            message = f"at most {limits.consumer_per_minute} requests a minute per consumer"
            raise self._refused(message, minute_left, "consumer_rate")
        organisation_used = used((self.organisation_rate, minute), 0)
        if organisation_used + 1 > limits.organisation_per_minute:
            message = f"at most {limits.organisation_per_minute} requests a minute per organisation"
            raise self._refused(message, minute_left, "organisation_rate")
        if quota_used + len(fresh) > req.daily_quota:
            message = f"the grant's daily quota of {req.daily_quota} claims is used up"
            raise self._refused(message, day_left, "quota")
        new_keys = [key for key in asks_by_key if (keys_scope, day, key) not in members]
        keys_used = used((keys_scope, day), 0)
        if keys_used + len(new_keys) > limits.distinct_keys_per_day:
            message = f"at most {limits.distinct_keys_per_day} different entities a day per consumer"
            raise self._refused(message, day_left, "distinct_keys")
        new_asks: list[tuple[str, list[str], int]] = []
        for key, asks in asks_by_key.items():
            scope = asks_of[key]
            unseen = [a for a in asks if (scope, probe, a) not in members]
            asked = used((scope, probe), 0)
            if asked + len(unseen) > limits.probe_checks_per_key:
                message = (
                    f"at most {limits.probe_checks_per_key} different questions about one entity "
                    f"in {limits.probe_window_seconds} seconds"
                )
                raise self._refused(message, probe_left, "probe")
            new_asks.append((scope, unseen, asked))

        # Everything holds: count it all.
        rows.used[(self.consumer_rate, minute)] = consumer_used + 1
        writes.count(self.consumer_rate, minute, 1, minute_end)
        rows.used[(self.organisation_rate, minute)] = organisation_used + 1
        writes.count(self.organisation_rate, minute, 1, minute_end)
        if fresh:
            rows.used[(self.quota, day)] = quota_used + len(fresh)
            writes.count(self.quota, day, len(fresh), day_end)
        if new_keys:
            rows.used[(keys_scope, day)] = keys_used + len(new_keys)
            writes.count(keys_scope, day, len(new_keys), day_end)
            for key in new_keys:
                members.add((keys_scope, day, key))
                writes.members.append((keys_scope, day, key, day_end))
        for scope, unseen, asked in new_asks:
            if unseen:
                rows.used[(scope, probe)] = asked + len(unseen)
                writes.count(scope, probe, len(unseen), probe_end)
            for ask in unseen:
                members.add((scope, probe, ask))
                writes.members.append((scope, probe, ask, probe_end))
        for claim in fresh.values():
            stored_answers[(answer_scope, probe, claim.fingerprint)] = claim.answer
            writes.answers.append((answer_scope, probe, claim.fingerprint, claim.answer, probe_end))
        billable = sum(c.billable for c in fresh.values())
        sums = writes.billing.setdefault((req.consumer, req.grant, req.service, req.purpose, self.today), [0, 0, 0, 0])
        sums[0] += 1
        sums[1] += len(fresh)
        sums[2] += billable
        sums[3] += billable * req.fee_micro_yuan_per_claim
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

    def _refused(self, message: str, retry_after_seconds: int, limit: str) -> LimitReached:
        req = self.request
        return LimitReached(
            message, retry_after_seconds=retry_after_seconds, limit=limit, consumer=req.consumer, grant=req.grant
        )


Outcome = tuple[Waiter, Any, BaseException | None]


def wanted_by(admissions: list[tuple[Admit, Waiter]]) -> Wanted:
    wanted = Wanted()
    for admit, _waiter in admissions:
        admit.want(wanted)
    return wanted


def decide(
    admissions: list[tuple[Admit, Waiter]], rows: Rows
) -> tuple[list[Outcome], Writes, list[tuple[LimitReached, float]]]:
    """Each admission in order against `rows`: the outcomes, what the admitted ones write, and
    the refusals (with their time) whose counts are still to be noted."""
    outcomes: list[Outcome] = []
    writes = Writes()
    refusals: list[tuple[LimitReached, float]] = []
    for admit, waiter in admissions:
        try:
            outcomes.append((waiter, admit.decide(rows, writes), None))
        except Exception as exc:  # this admission only: it changed nothing
            outcomes.append((waiter, None, exc))
            if isinstance(exc, LimitReached):
                refusals.append((exc, admit.now))
    return outcomes, writes, refusals


def note_refusal(conn: Db, refused: LimitReached, now: float) -> None:
    """After the batch's writes (a refused admission wrote nothing): probing and enumeration limits alert at once;
    a burst of refusals of one consumer alerts too."""
    minute, minute_end, _left = window_of(now, MINUTE)
    day = int(now // DAY)
    if refused.limit in ("probe", "distinct_keys", "quota"):
        subject = refused.grant if refused.limit == "quota" else refused.consumer
        insert_alert(conn, f"{refused.limit}_limit", subject, refused.detail, f"{refused.limit}:{subject}:{day}")
    scope = f"refusals:{refused.consumer}"
    conn.execute(
        'INSERT INTO counters VALUES (?, ?, 1, ?) ON CONFLICT (scope, "window") DO UPDATE SET used = counters.used + 1',
        (scope, minute, minute_end),
    )
    (count,) = conn.execute('SELECT used FROM counters WHERE scope = ? AND "window" = ?', (scope, minute)).fetchone()
    if count > REFUSALS_ALERT_PER_MINUTE:
        message = f"{refused.consumer} was refused {count} times this minute"
        insert_alert(conn, "refusal_burst", refused.consumer, message, f"burst:{refused.consumer}:{minute}")
