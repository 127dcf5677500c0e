"""Exact budgets: never overspent under concurrency, across processes, or after a crash."""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gateway.domain.budget import Accounts, Amount, accounts, micro_epsilon, nano_delta
from gateway.errors import BudgetExhausted, Conflict, InvalidRequest, NotFound
from gateway.state.budget_postgres import PostgresBudgetLedger
from gateway.state.budget_sqlite import SqliteBudgetLedger
from gateway.state.ports import BudgetStore
from tests.budget.conftest import Opener
from tests.conftest import PG_DSN


def _accounts(grant_cap: Amount, organisation_cap: Amount | None = None, version_cap: Amount | None = None) -> Accounts:
    big = Amount(10**12, 10**9)
    return accounts(
        grant="g1", consumer="c1", organisation="org", dataset="social_insurance", version="v1",
        grant_cap=grant_cap, organisation_cap=organisation_cap or big, dataset_version_cap=version_cap or big,
    )  # fmt: skip


def test_exact_units_round_up_and_refuse_nonsense() -> None:
    assert micro_epsilon("0.1") == 100_000
    assert micro_epsilon(Decimal("0.0000011")) == 2  # rounded up, never down
    assert nano_delta("1e-9") == 1 and nano_delta(0) == 0
    for bad in ("0", "-1", "NaN", "Infinity", "0.0000001", "x"):
        with pytest.raises(InvalidRequest):
            micro_epsilon(bad)
    with pytest.raises(InvalidRequest):
        nano_delta("1e-12")


def test_reserve_commit_release(open_ledger: Opener) -> None:
    ledger = open_ledger()
    acc = _accounts(Amount(1_000_000))
    first = ledger.reserve(acc, Amount(400_000))
    second = ledger.reserve(acc, Amount(400_000))
    with pytest.raises(BudgetExhausted, match="the grant's budget"):
        ledger.reserve(acc, Amount(400_000))
    ledger.release(second)  # nothing was read: given back
    ledger.commit(first)  # data was read: spent for good
    ledger.commit(first)  # idempotent
    ledger.release(first)  # a committed charge stays
    balance = ledger.balance(acc.grant)
    assert balance.spent == Amount(400_000) and balance.reserved == Amount(0)
    third = ledger.reserve(acc, Amount(600_000))
    ledger.commit(third)
    with pytest.raises(BudgetExhausted):
        ledger.reserve(acc, Amount(1))
    with pytest.raises(NotFound):
        ledger.commit("no-such-reservation")


def test_what_a_crash_left_is_given_back_only_if_no_data_was_read(open_ledger: Opener) -> None:
    """Two requests died: one before reading data, one after. The first's reservation is given
    back, the second's charge stays; a request still running past the cut-off reads nothing."""
    ledger, other_process = open_ledger(), open_ledger()
    acc = _accounts(Amount(1_000_000))
    never_read = ledger.reserve(acc, Amount(300_000))
    read = ledger.reserve(acc, Amount(300_000))
    ledger.mark_reading(read)
    ledger.mark_reading(read)  # once or twice, the same
    with pytest.raises(Conflict, match="read data"):
        ledger.release(read)  # the charge of a read stays
    cutoff = datetime.now(UTC).isoformat()
    recent = ledger.reserve(acc, Amount(300_000))  # after the cut-off: not stale
    stale = other_process.stale(cutoff)
    assert {s.id: s.state for s in stale} == {never_read: "reserved", read: "reading"}
    assert all(s.amount == Amount(300_000) and acc.grant in s.accounts for s in stale)
    assert other_process.settle_stale(cutoff) == (1, 1)
    assert ledger.stale(cutoff) == []
    balance = ledger.balance(acc.grant)
    assert balance.spent == Amount(300_000) and balance.reserved == Amount(300_000)  # `recent` still held
    with pytest.raises(Conflict, match="no longer held"):
        ledger.mark_reading(never_read)  # its request, had it lived, may not read now
    ledger.mark_reading(recent)
    ledger.commit(recent)
    assert ledger.balance(acc.grant).spent == Amount(600_000)


def test_every_level_holds(open_ledger: Opener) -> None:
    ledger = open_ledger()
    organisation = _accounts(Amount(10**6), organisation_cap=Amount(300_000))
    ledger.reserve(organisation, Amount(200_000))
    with pytest.raises(BudgetExhausted, match="organisation's budget"):
        ledger.reserve(organisation, Amount(200_000))
    version = _accounts(Amount(10**6), version_cap=Amount(250_000))
    with pytest.raises(BudgetExhausted, match="global budget of this dataset version"):
        ledger.reserve(version, Amount(100_000))  # 200,000 already reserved against this version
    delta = _accounts(Amount(10**6, 10))
    ledger.reserve(delta, Amount(1, 6))
    with pytest.raises(BudgetExhausted):
        ledger.reserve(delta, Amount(1, 5))


def test_two_hundred_simultaneous_requests_for_ten_releases(open_ledger: Opener) -> None:
    handles = [open_ledger() for _ in range(4)]  # four gateway processes' handles on one ledger
    acc = _accounts(Amount(10 * 100_000))

    def attempt(i: int) -> bool:
        ledger = handles[i % len(handles)]
        try:
            reservation = ledger.reserve(acc, Amount(100_000))
        except BudgetExhausted:
            return False
        ledger.commit(reservation)
        return True

    with ThreadPoolExecutor(max_workers=32) as pool:
        outcomes = list(pool.map(attempt, range(200)))
    assert outcomes.count(True) == 10 and outcomes.count(False) == 190
    assert handles[0].balance(acc.grant).spent == Amount(1_000_000)


def _worker(backend: str, where: str, attempts: int, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    ledger: BudgetStore = (
        SqliteBudgetLedger(Path(where))
        if backend == "sqlite"
        else PostgresBudgetLedger(os.environ["VG_PG"], schema=where)
    )
    won = 0
    for _ in range(attempts):
        try:
            ledger.commit(ledger.reserve(_accounts(Amount(1_000_000)), Amount(100_000)))
            won += 1
        except BudgetExhausted:
            pass
    ledger.close()
    results.put(won)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_several_processes_release_exactly_the_budget(backend: str, tmp_path: Path) -> None:
    if backend == "postgres" and PG_DSN is None:
        pytest.skip("set VEILGATE_TEST_PG_DSN to run against PostgreSQL")
    where = str(tmp_path / "budget.sqlite3") if backend == "sqlite" else f"vg_test_{os.getpid()}_{id(tmp_path)}"
    first = SqliteBudgetLedger(Path(where)) if backend == "sqlite" else PostgresBudgetLedger(PG_DSN or "", schema=where)
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    os.environ["VG_PG"] = PG_DSN or ""
    workers = [context.Process(target=_worker, args=(backend, where, 50, results)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert sum(results.get(timeout=10) for _ in workers) == 10  # 200 attempts, a budget for 10
    assert first.balance(_accounts(Amount(1)).grant).spent == Amount(1_000_000)
    first.close()
    if backend == "postgres":
        import psycopg

        with psycopg.connect(PG_DSN or "", autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("DROP SCHEMA {} CASCADE").format(psycopg.sql.Identifier(where)))


class LedgerMachine(RuleBasedStateMachine):
    """Reserve, commit, release and crash (reopen) in any order: spent + reserved never exceeds
    the cap, and the ledger agrees with a model of what should be."""

    CAP = Amount(1_000_000, 1_000)

    def __init__(self) -> None:
        super().__init__()
        self._dir = tempfile.TemporaryDirectory()
        self.path = Path(self._dir.name) / "budget.sqlite3"
        self.ledger: BudgetStore = SqliteBudgetLedger(self.path)
        self.acc = _accounts(self.CAP)
        self.open: dict[str, Amount] = {}
        self.spent = Amount(0, 0)

    @rule(eps=st.integers(1, 400_000), delta=st.integers(0, 400))
    def reserve(self, eps: int, delta: int) -> None:
        amount = Amount(eps, delta)
        used = self.spent + sum(self.open.values(), Amount(0, 0))
        try:
            reservation = self.ledger.reserve(self.acc, amount)
        except BudgetExhausted:
            assert not amount.fits(used, self.CAP)
            return
        assert amount.fits(used, self.CAP)
        self.open[reservation] = amount

    @precondition(lambda self: bool(self.open))
    @rule(data=st.data())
    def commit(self, data: st.DataObject) -> None:
        reservation = data.draw(st.sampled_from(list(self.open)))  # insertion order: ids are random
        self.ledger.commit(reservation)
        self.spent = self.spent + self.open.pop(reservation)

    @precondition(lambda self: bool(self.open))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        reservation = data.draw(st.sampled_from(list(self.open)))
        self.ledger.release(reservation)
        del self.open[reservation]

    @rule()
    def crash(self) -> None:
        """The process dies: open reservations stay counted (the safe side)."""
        self.ledger.close()
        self.ledger = SqliteBudgetLedger(self.path)

    @invariant()
    def never_overspent(self) -> None:
        balance = self.ledger.balance(self.acc.grant)
        assert balance.spent == self.spent
        assert balance.reserved == sum(self.open.values(), Amount(0, 0))
        assert Amount(0, 0).fits(balance.spent + balance.reserved, self.CAP)

    def teardown(self) -> None:
        self.ledger.close()
        self._dir.cleanup()


TestLedgerMachine = LedgerMachine.TestCase
TestLedgerMachine.settings = settings(max_examples=40, stateful_step_count=30, deadline=None,
                                      suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
