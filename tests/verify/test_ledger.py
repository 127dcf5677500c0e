"""The ledger: each limit trips exactly at its value, resets with its window, refuses without
counting, and holds with several processes admitting at once. On both backends: SQLite always,
PostgreSQL when VEILGATE_TEST_PG_DSN is set (each process then stands for a replica)."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.limits import VerificationLimits
from gateway.errors import ConfigurationError, DependencyError, RateLimited
from gateway.state import group_commit
from gateway.state.ledger import LedgerRules
from gateway.state.ledger_admission import DAY, Admit, as_presumed, decide, presumed
from gateway.state.ledger_postgres import PostgresLedger
from gateway.state.ledger_sqlite import SqliteLedger
from gateway.state.ledger_tables import EXACT_ROWS, Rows, exact_sql
from gateway.state.ports import Admission, ClaimUse, VerificationRequest
from tests.conftest import ON_POSTGRES, PG_DSN, needs_pg, pg_schema

Where = tuple[str, str]
"""('sqlite', directory) or ('postgres', schema): enough for another process to open the same ledger."""

NOON = 1_795_000_000.0 - (1_795_000_000.0 % DAY) + DAY / 2  # a UTC noon, far from window edges


def claim(key: str, *asks: str, answer: str = '{"result":"match"}', billable: bool = True) -> ClaimUse:
    return ClaimUse(f"{key}:{'+'.join(asks)}", key, asks or ("a",), answer, billable)


def request(
    *claims: ClaimUse,
    limits: VerificationLimits | None = None,
    quota: int = 1000,
    consumer: str = "c1",
    organisation: str = "org",
) -> VerificationRequest:
    return VerificationRequest(
        consumer, organisation, "g1", "svc", "credit_assessment", limits or VerificationLimits(), quota, claims
    )


def open_at(where: Where) -> LedgerRules:
    backend, place = where
    if backend == "sqlite":
        return SqliteLedger.open(Path(place))
    assert PG_DSN is not None
    return PostgresLedger(PG_DSN, schema=place)


@pytest.fixture(params=["sqlite", ON_POSTGRES])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Where]:
    """Where one ledger lives; every `open_at` opens another handle on it (another process)."""
    if request.param == "sqlite":
        yield ("sqlite", str(tmp_path))
        return
    with pg_schema() as schema:
        yield ("postgres", schema)


@pytest.fixture
def open_ledger(where: Where) -> Iterator[Callable[[], LedgerRules]]:
    opened: list[LedgerRules] = []

    def factory() -> LedgerRules:
        opened.append(open_at(where))
        return opened[-1]

    yield factory
    for handle in opened:
        handle.close()


@pytest.fixture
def ledger(open_ledger: Callable[[], LedgerRules]) -> LedgerRules:
    return open_ledger()


def test_the_consumer_rate_trips_at_its_value_and_resets_next_minute(ledger: LedgerRules) -> None:
    limits = VerificationLimits(consumer_per_minute=3)
    for i in range(3):
        ledger.admit_verification(request(claim(f"k{i}"), limits=limits), now=NOON + i)
    with pytest.raises(RateLimited, match="3 requests a minute per consumer") as refused:
        ledger.admit_verification(request(claim("k9"), limits=limits), now=NOON + 3)
    assert refused.value.headers["Retry-After"] == "57"
    ledger.admit_verification(request(claim("k9"), limits=limits), now=NOON + 60)


def test_the_organisation_rate_spans_its_consumers(ledger: LedgerRules) -> None:
    limits = VerificationLimits(organisation_per_minute=4)
    for i in range(4):
        ledger.admit_verification(request(claim(f"k{i}"), limits=limits, consumer=f"c{i % 2}"), now=NOON)
    with pytest.raises(RateLimited, match="per organisation"):
        ledger.admit_verification(request(claim("k8"), limits=limits, consumer="c3"), now=NOON)
    ledger.admit_verification(request(claim("k8"), limits=limits, consumer="c3", organisation="other"), now=NOON)


def test_the_quota_counts_claims_not_requests_and_resets_next_day(ledger: LedgerRules) -> None:
    ledger.admit_verification(request(claim("a"), claim("b"), claim("c"), quota=4), now=NOON)
    with pytest.raises(RateLimited, match="daily quota of 4"):
        ledger.admit_verification(request(claim("d"), claim("e"), quota=4), now=NOON)
    admitted = ledger.admit_verification(request(claim("d"), quota=4), now=NOON)
    assert [w.remaining for w in admitted.windows if w.name == "quota"] == [0]
    ledger.admit_verification(request(claim("e"), quota=4), now=NOON + DAY)


def test_repeats_get_the_stored_answer_and_are_free(ledger: LedgerRules) -> None:
    first = ledger.admit_verification(request(claim("a", "x", answer="first"), quota=1), now=NOON)
    assert first.answers == ("first",) and first.repeats == 0
    again = ledger.admit_verification(request(claim("a", "x", answer="changed"), quota=1), now=NOON + 100)
    assert again.answers == ("first",) and again.repeats == 1
    twice = ledger.admit_verification(
        request(claim("a", "x", answer="y"), claim("a", "x", answer="z"), quota=1), now=NOON
    )
    assert twice.answers == ("first", "first")


def test_the_distinct_key_cap(ledger: LedgerRules) -> None:
    limits = VerificationLimits(distinct_keys_per_day=2)
    ledger.admit_verification(request(claim("a"), claim("b"), limits=limits), now=NOON)
    ledger.admit_verification(request(claim("a", "other question"), limits=limits), now=NOON)  # a known key
    with pytest.raises(RateLimited, match="2 different entities a day"):
        ledger.admit_verification(request(claim("c"), limits=limits), now=NOON)
    ledger.admit_verification(request(claim("c"), limits=limits, consumer="c2"), now=NOON)


def test_the_probe_limit_counts_distinct_questions_per_key(ledger: LedgerRules) -> None:
    limits = VerificationLimits(probe_checks_per_key=3, probe_window_seconds=3600)
    ledger.admit_verification(request(claim("k", "name=a", "active"), limits=limits), now=NOON)
    ledger.admit_verification(request(claim("k", "name=a"), limits=limits), now=NOON)  # asked before
    ledger.admit_verification(request(claim("k", "name=b"), limits=limits), now=NOON)
    with pytest.raises(RateLimited, match="3 different questions about one entity in 3600 seconds") as refused:
        ledger.admit_verification(request(claim("k", "name=c"), limits=limits), now=NOON)
    assert int(refused.value.headers["Retry-After"]) == 3600 - int(NOON % 3600)
    ledger.admit_verification(request(claim("other", "name=c"), limits=limits), now=NOON)
    ledger.admit_verification(request(claim("k", "name=c"), limits=limits), now=NOON + 3600)


def test_a_refused_request_counts_nothing(ledger: LedgerRules) -> None:
    limits = VerificationLimits(probe_checks_per_key=1)
    with pytest.raises(RateLimited):
        ledger.admit_verification(request(claim("a"), claim("b", "x", "y"), limits=limits, quota=10), now=NOON)
    ok = ledger.admit_verification(request(claim("b", "x"), limits=limits, quota=10), now=NOON)
    assert [w.remaining for w in ok.windows if w.name == "quota"] == [9]
    assert [w.remaining for w in ok.windows if w.name == "consumer"] == [VerificationLimits().consumer_per_minute - 1]


def test_metering_counts_billable_claims(ledger: LedgerRules) -> None:
    ledger.admit_verification(request(claim("a"), claim("b", billable=False)), now=NOON)
    ledger.admit_verification(request(claim("a")), now=NOON)  # a repeat: not billed again
    ((service, purpose, _day, calls, claims, billable),) = ledger.usage("g1")
    assert (service, purpose, calls, claims, billable) == ("svc", "credit_assessment", 2, 2, 1)


def _admit_many(where: Where, worker: int, attempts: int, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    ledger = open_at(where)
    admitted = 0
    for i in range(attempts):
        try:
            ledger.admit_verification(request(claim(f"w{worker}-{i}"), quota=50), now=NOON)
            admitted += 1
        except RateLimited:
            pass
    ledger.close()
    results.put(admitted)


def test_the_admissions_of_one_batch_are_decided_in_order_each_seeing_the_ones_before(ledger: LedgerRules) -> None:
    """A batch reads its rows once and decides every admission against what the earlier ones
    counted: the outcomes are those of the same requests one after the other."""
    limits = VerificationLimits(probe_checks_per_key=2, distinct_keys_per_day=2, consumer_per_minute=7)
    held, release = threading.Event(), threading.Event()

    def hold(_conn: object) -> None:  # the writer waits here while the batch queues up behind it
        held.set()
        release.wait(10)

    blocker = ledger._submit(hold)
    assert held.wait(10)
    queued: list[Future[Any]] = [
        ledger._submit(Admit(request(*claims, limits=limits, quota=5, consumer=consumer), NOON))
        for claims, consumer in (
            ((claim("k", "q1", answer="one"),), "c1"),
            ((claim("k", "q2"),), "c1"),
            ((claim("k", "q3"),), "c1"),  # a third question about k: refused, counts nothing
            ((claim("k", "q1", answer="other"),), "c1"),  # a repeat: the stored answer, free
            ((claim("m", "q1"), claim("m", "q1")), "c1"),  # the same claim twice: counted once
            ((claim("n", "q1"),), "c1"),  # a third entity: refused
            ((claim("k", "q3"),), "c2"),  # another consumer: its own limits
            ((claim("p", "q1"), claim("r", "q1")), "c2"),  # quota: 5 claims, 4 used before this
        )
    ]
    release.set()
    blocker.result(10)
    outcomes = [f.exception(10) or f.result(10) for f in queued]
    refused = [i for i, outcome in enumerate(outcomes) if isinstance(outcome, RateLimited)]
    assert refused == [2, 5, 7]
    assert "2 different questions" in str(outcomes[2]) and "2 different entities" in str(outcomes[5])
    assert "daily quota of 5" in str(outcomes[7])
    repeat = outcomes[3]
    assert isinstance(repeat, Admission) and repeat.answers == ("one",) and repeat.repeats == 1
    twice = outcomes[4]
    assert isinstance(twice, Admission) and twice.repeats == 1
    # What the batch wrote is what the next request sees.
    ((_service, _purpose, _day, calls, claims, _billable),) = ledger.usage("g1")
    assert (calls, claims) == (5, 4)  # every admitted request; fresh claims only
    with pytest.raises(RateLimited, match="2 different questions"):
        ledger.admit_verification(request(claim("k", "q4"), limits=limits, quota=5), now=NOON)
    after = ledger.admit_verification(request(claim("p", "q1"), limits=limits, quota=5, consumer="c2"), now=NOON)
    assert [w.remaining for w in after.windows] == [7 - 1 - 1, 0]  # c2's second request this minute


def test_several_processes_never_exceed_the_quota(where: Where, open_ledger: Callable[[], LedgerRules]) -> None:
    open_ledger()  # the tables exist before the race
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [context.Process(target=_admit_many, args=(where, w, 30, results)) for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert sum(results.get(timeout=10) for _ in workers) == 50  # 120 attempts, exactly 50 admitted
    assert open_ledger().usage("g1")[0][4] == 50


def test_pruning_drops_ended_windows_only(ledger: LedgerRules) -> None:
    limits = VerificationLimits(probe_checks_per_key=1, probe_window_seconds=600)
    ledger.admit_verification(request(claim("k", "x"), limits=limits), now=NOON)
    ledger.prune(NOON + 10)
    with pytest.raises(RateLimited):
        ledger.admit_verification(request(claim("k", "y"), limits=limits), now=NOON + 10)
    ledger.prune(NOON + DAY + 1)
    ledger.admit_verification(request(claim("k", "y"), limits=limits), now=NOON + DAY + 1)


def test_limit_state_is_read_by_key_seeks_never_by_scanning(tmp_path: Path) -> None:
    """A scan would make every admission slower as the day's members grow (it did once: the
    members of a consumer's day were scanned on every request)."""
    conn = sqlite3.connect(SqliteLedger.open(tmp_path).path)
    plan = conn.execute("EXPLAIN QUERY PLAN " + exact_sql((5, 3, 2)), [0] * (5 * 2 + 3 * 3 + 2 * 3)).fetchall()
    steps = [str(row[3]) for row in plan]
    seeks = [s.partition(" (")[2] for s in steps if s.startswith("SEARCH t USING ")]
    assert seeks == [
        "scope=? AND window=?)",
        "scope=? AND window=? AND item=?)",
        "scope=? AND window=? AND fingerprint=?)",
    ]
    assert "SEARCH t USING COVERING INDEX" in " ".join(steps)  # members: the index alone answers
    assert not [s for s in steps if s.startswith("SCAN t")]


def test_a_batch_beyond_one_read_chunk_is_counted_exactly(ledger: LedgerRules) -> None:
    """More keys than one read takes (`EXACT_ROWS`): every one still counts, and a repeat of
    the whole batch adds none."""
    many = [claim(f"key{i}", "a", "b") for i in range(EXACT_ROWS + 7)]
    limits = VerificationLimits(distinct_keys_per_day=EXACT_ROWS + 7)
    ledger.admit_verification(request(*many, limits=limits, quota=10_000), now=NOON)
    again = ledger.admit_verification(request(*many, limits=limits, quota=10_000), now=NOON + 1)
    assert again.repeats == len(many)
    with pytest.raises(RateLimited, match="different entities"):
        ledger.admit_verification(request(claim("one-more"), limits=limits, quota=10_000), now=NOON + 2)


@pytest.mark.postgres
@needs_pg
def test_postgres_ledger_recovers_when_its_connections_are_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    """A database restart or failover: the batch in flight fails (503, nothing counted), the next
    one runs on a new connection. (An idle writer checks its connection first; not here, so that
    the batch meets the cut.)"""
    monkeypatch.setattr(group_commit, "CHECK_AFTER_IDLE_SECONDS", 3600.0)
    with pg_schema() as schema:
        ledger = open_at(("postgres", schema))
        try:
            _cut_and_recover(ledger)
        finally:
            ledger.close()


def _cut_and_recover(ledger: LedgerRules) -> None:
    import psycopg

    ledger.admit_verification(request(claim("a"), quota=3), now=NOON)
    assert PG_DSN is not None
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'veilgate-ledger'"
        )
    with pytest.raises(DependencyError, match="ledger is unavailable"):
        ledger.admit_verification(request(claim("b"), quota=3), now=NOON)
    ledger.admit_verification(request(claim("b"), quota=3), now=NOON)
    ledger.admit_verification(request(claim("c"), quota=3), now=NOON)
    with pytest.raises(RateLimited, match="daily quota of 3"):  # the failed one counted nothing
        ledger.admit_verification(request(claim("d"), quota=3), now=NOON)
    assert ledger.usage("g1")[0][4] == 3  # reports read again, on a new connection


def test_a_ledger_refuses_pseudonyms_of_another_secret(open_ledger: Callable[[], LedgerRules]) -> None:
    """Another secret makes other pseudonyms for the same entity: each would be counted once per
    secret, so a process with another secret is refused before it admits anything."""
    open_ledger().bind_pseudonyms("key-id:first")
    open_ledger().bind_pseudonyms("key-id:first")  # the same secret, from another process
    with pytest.raises(ConfigurationError, match=r"subject secret \(state/audit/subject.key\)"):
        open_ledger().bind_pseudonyms("key-id:other")


_ANSWERS = st.sampled_from(['{"r":1}', '{"r":2}'])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from("xy"), _ANSWERS), min_size=1, max_size=6),
    st.dictionaries(st.sampled_from("abc"), _ANSWERS, max_size=3),
)
def test_the_admission_presumed_is_the_one_made_when_no_claim_was_answered_before(
    asked: list[tuple[str, str, str]], answered_before: dict[str, str]
) -> None:
    """Releases are built before the locks on `presumed(request)`, and kept when the ledger admits
    exactly that: it must be what `decide` makes when nothing is stored (repeats inside the
    request included), and be told apart from it whenever a claim was answered before, even
    with the answer it brings now."""
    wanted = request(*[claim(key, ask, answer=answer) for key, ask, answer in asked])
    admit = Admit(wanted, NOON)
    rows = Rows()
    for c in wanted.claims:
        if c.key in answered_before:
            rows.answers[(admit.answers, admit.probe[0], c.fingerprint)] = answered_before[c.key]
    ((_waiter, admission, refused),), _writes, _refusals = decide([(admit, None)], rows)
    assert refused is None and admission is not None
    guess = presumed(wanted)
    stored = any(c.key in answered_before for c in wanted.claims)
    assert (admission.answers, admission.repeats) == (guess.answers, guess.repeats) or stored
    assert as_presumed(admission, guess) == (not stored)
