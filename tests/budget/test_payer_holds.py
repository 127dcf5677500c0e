"""One question, one charge, per payer, and no payer waits on another's request.

The attacker is a consumer who wants to learn whether another consumer is asking a question
right now: it asks the same question while the other's is being computed and watches whether
its own request waits. Through the charging protocol (`services.charging`) on both ledger
backends, with threads standing for concurrent requests.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.domain.budget import Accounts, Amount, accounts
from gateway.domain.trail import Json
from gateway.services import charging
from tests.budget.conftest import Opener

QUESTION = "question-key"
PRICE = Amount(100_000)


def _acc(grant: str, consumer: str) -> Accounts:
    return accounts(
        grant=grant, consumer=consumer, organisation=f"org-{consumer}", dataset="d", version="v",
        grant_cap=Amount(10**6), organisation_cap=Amount(10**6), dataset_version_cap=Amount(10**7),
    )  # fmt: skip


ALICE, BOB = _acc("g1", "alice"), _acc("g2", "bob")


class Computation:
    """A computation that records its runs and, when told to, blocks until released."""

    def __init__(self, answer: int, gate: threading.Event | None = None) -> None:
        self.answer, self.gate, self.runs = answer, gate, 0
        self.started = threading.Event()

    def __call__(self, reading: Callable[[], None]) -> Json:
        reading()
        self.runs += 1
        self.started.set()
        if self.gate is not None and not self.gate.wait(30):
            raise TimeoutError("the test never released the computation")
        return {"answer": self.answer}


@pytest.fixture
def ask(open_ledger: Opener) -> Iterator[Callable[[Accounts, Computation], tuple[Json, bool]]]:
    """Ask QUESTION as a payer, on a ledger handle of its own (another process or replica)."""
    handles = []

    def one(payer: Accounts, compute: Computation) -> tuple[Json, bool]:
        ledger = open_ledger()
        handles.append(ledger)
        ((result, paid),) = charging.run(
            SimpleNamespace(budget=ledger), [charging.Charge(QUESTION, PRICE, payer, compute)]
        )  # type: ignore[arg-type]
        return result, paid

    yield one
    for ledger in handles:
        ledger.close()


def test_no_payer_waits_on_another_payers_question(
    ask: Callable[[Accounts, Computation], tuple[Json, bool]], open_ledger: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(charging, "HOLD_WAIT_SECONDS", 5.0)  # a shared hold would fail in 5 s, not 30
    gate = threading.Event()
    alices = Computation(1, gate)
    with ThreadPoolExecutor(3) as pool:
        first: Future[Any] = pool.submit(ask, ALICE, alices)
        assert alices.started.wait(10)  # Alice's question is being computed, holding its key
        # Bob asks the same question meanwhile: he is answered while Alice's is still running,
        # charged as for any new question, and his own computation ran (no shortcut to tell him)
        bobs = Computation(2)
        bob_result, bob_paid = pool.submit(ask, BOB, bobs).result(timeout=4)
        assert not first.done() and bob_paid and bobs.runs == 1 and bob_result == {"answer": 2}
        # Alice's second copy waits for her first: her question is charged to her once
        again: Future[Any] = pool.submit(ask, ALICE, Computation(3))
        gate.set()
        alice_result, alice_paid = first.result(timeout=10)
        copy_result, copy_paid = again.result(timeout=10)
    # one question, one answer: the first stored (Bob's) is everyone's
    assert alice_result == copy_result == bob_result and alice_paid and not copy_paid
    ledger = open_ledger()
    assert ledger.balance(ALICE.grant).spent == PRICE and ledger.balance(BOB.grant).spent == PRICE
    assert ledger.balance(ALICE.grant).reserved == Amount(0)
    assert ledger.stale_holds("2999-01-01T00:00:00+00:00") == []  # every hold was dropped


def test_a_question_another_payer_stored_is_computed_and_charged_as_new(
    ask: Callable[[Accounts, Computation], tuple[Json, bool]], open_ledger: Opener
) -> None:
    """A stored answer is not returned faster: the later payer's computation runs (and is discarded)."""
    assert ask(ALICE, Computation(1)) == ({"answer": 1}, True)
    bobs = Computation(2)
    assert ask(BOB, bobs) == ({"answer": 1}, True)
    assert bobs.runs == 1
    alice_again = Computation(3)
    assert ask(ALICE, alice_again) == ({"answer": 1}, False)  # her own repeat: free, and she knows it
    assert alice_again.runs == 0
    ledger = open_ledger()
    assert ledger.balance(ALICE.grant).spent == PRICE and ledger.balance(BOB.grant).spent == PRICE
