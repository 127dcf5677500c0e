"""The stored releases and idempotency keys, on both backends: the first release of a question
wins, a batch reserves all or nothing, and an idempotency key is held by one request at a time."""

from __future__ import annotations

import pytest

from gateway.domain.budget import Accounts, Amount, accounts
from gateway.errors import BudgetExhausted
from tests.budget.conftest import Opener


def _acc(cap: int) -> Accounts:
    return accounts(
        grant="g", consumer="c", organisation="o", dataset="d", version="v",
        grant_cap=Amount(cap), organisation_cap=Amount(10**9), dataset_version_cap=Amount(10**9),
    )  # fmt: skip


def test_the_first_stored_release_wins(open_ledger: Opener) -> None:
    one, other = open_ledger(), open_ledger()
    acc = _acc(10**6)
    first, second = one.reserve(acc, Amount(100)), other.reserve(acc, Amount(100))
    assert one.stored_release("q") is None
    assert one.commit_release(first, "q", '{"answer": 1}') == '{"answer": 1}'
    assert other.commit_release(second, "q", '{"answer": 2}') == '{"answer": 1}'
    assert other.stored_release("q") == '{"answer": 1}'
    assert one.balance("grant:g:c:d").spent == Amount(200)  # both read the data: both are charged


def test_a_batch_reserves_all_or_nothing(open_ledger: Opener) -> None:
    ledger = open_ledger()
    acc = _acc(250)
    with pytest.raises(BudgetExhausted):
        ledger.reserve_all([(acc, Amount(100)), (acc, Amount(100)), (acc, Amount(100))])
    assert ledger.balance("grant:g:c:d").reserved == Amount(0)
    made = ledger.reserve_all([(acc, Amount(100)), (acc, Amount(150))])
    assert len(made) == 2 and ledger.balance("grant:g:c:d").reserved == Amount(250)
    ledger.release(made[0])
    ledger.commit(made[1])
    assert ledger.balance("grant:g:c:d").spent == Amount(150)


def test_an_idempotency_key_is_held_by_one_request(open_ledger: Opener) -> None:
    one, other = open_ledger(), open_ledger()
    assert one.claim_idempotency_key("c", "k", "digest-1") is None
    held = other.claim_idempotency_key("c", "k", "digest-1")
    assert held is not None and held.state == "running" and held.body is None
    one.finish_idempotency_key("c", "k", '{"done": true}')
    done = other.claim_idempotency_key("c", "k", "digest-1")
    assert done is not None and done.body == '{"done": true}' and done.request_digest == "digest-1"
    assert other.claim_idempotency_key("another consumer", "k", "digest-9") is None
    assert one.claim_idempotency_key("c", "refused", "d") is None
    one.finish_idempotency_key("c", "refused", None)  # a refusal frees the key
    assert other.claim_idempotency_key("c", "refused", "d") is None


PAST = "2000-01-01T00:00:00+00:00"
FUTURE = "2999-01-01T00:00:00+00:00"


PAYER = "grant:g:c:d"
OTHER_PAYER = "grant:another:c:d"


def test_a_question_is_held_by_one_request_of_its_payer_across_handles(open_ledger: Opener) -> None:
    one, other = open_ledger(), open_ledger()
    taken = one.hold_releases([("q1", PAYER), ("q2", PAYER)], "first", expired_before=PAST)
    assert taken.busy == () and taken.stored == {} and taken.paid == frozenset()
    # all or none: the other request holds neither q3 nor q2 while it waits for q2
    waiting = other.hold_releases([("q3", PAYER), ("q2", PAYER)], "second", expired_before=PAST)
    assert waiting.busy == (("q2", PAYER),)
    assert one.hold_releases([("q3", PAYER)], "third", expired_before=PAST).busy == ()
    one.drop_holds("third")
    reservation = one.reserve(_acc(10**6), Amount(100))
    one.commit_release(reservation, "q2", '{"answer": 2}', PAYER)
    one.drop_holds("first")
    now_held = other.hold_releases([("q3", PAYER), ("q2", PAYER)], "second", expired_before=PAST)
    assert now_held.busy == () and now_held.stored == {"q2": '{"answer": 2}'}
    assert now_held.paid == frozenset({("q2", PAYER)})
    assert other.paid_release("q2", PAYER) == '{"answer": 2}'
    assert other.paid_release("q2", OTHER_PAYER) is None
    other.drop_holds("second")


def test_a_hold_is_never_shared_between_payers(open_ledger: Opener) -> None:
    """SECURITY: another payer's request for the same question neither waits nor sees a hold."""
    one, other = open_ledger(), open_ledger()
    assert one.hold_releases([("q", PAYER)], "first", expired_before=PAST).busy == ()
    theirs = other.hold_releases([("q", OTHER_PAYER)], "second", expired_before=PAST)
    assert theirs.busy == () and theirs.paid == frozenset()
    reservation = one.reserve(_acc(10**6), Amount(100))
    one.commit_release(reservation, "q", '{"answer": 1}', PAYER)
    other.drop_holds("second")
    # the first payer's payment is not the second's, nor shown to it as one
    again = other.hold_releases([("q", OTHER_PAYER)], "third", expired_before=PAST)
    assert again.busy == () and again.paid == frozenset() and again.stored == {"q": '{"answer": 1}'}
    # the same payer still waits for its own request
    assert other.hold_releases([("q", PAYER)], "fourth", expired_before=PAST).busy == (("q", PAYER),)
    for holder in ("first", "third"):
        one.drop_holds(holder)
    assert other.hold_releases([("q", PAYER)], "fourth", expired_before=PAST).busy == ()


def test_a_hold_left_by_a_crash_expires_and_is_settled(open_ledger: Opener) -> None:
    crashed, other = open_ledger(), open_ledger()
    assert crashed.hold_releases([("q", PAYER)], "crashed", expired_before=PAST).busy == ()
    assert other.hold_releases([("q", PAYER)], "live", expired_before=PAST).busy == (("q", PAYER),)  # still young
    assert other.hold_releases([("q", PAYER)], "live", expired_before=FUTURE).busy == ()  # expired: taken over
    assert [(e.kind, e.name) for e in other.stale_holds(FUTURE)] == [("hold", "q")]
    assert other.settle_stale_holds(FUTURE) == (1, 0)
    assert other.stale_holds(FUTURE) == []


def test_an_idempotency_key_left_running_by_a_crash_expires(open_ledger: Opener) -> None:
    crashed, other = open_ledger(), open_ledger()
    assert crashed.claim_idempotency_key("c", "k", "digest-1") is None  # then the process died
    held = other.claim_idempotency_key("c", "k", "digest-1", expired_before=PAST)
    assert held is not None and held.state == "running"  # still young: 409, retry
    # another request under the same key is still refused, expired or not
    clash = other.claim_idempotency_key("c", "k", "digest-2", expired_before=FUTURE)
    assert clash is not None and clash.request_digest == "digest-1"
    assert other.claim_idempotency_key("c", "k", "digest-1", expired_before=FUTURE) is None  # taken over
    other.finish_idempotency_key("c", "k", '{"done": true}')
    done = crashed.claim_idempotency_key("c", "k", "digest-1", expired_before=FUTURE)
    assert done is not None and done.body == '{"done": true}'  # a finished key is never taken over
    assert crashed.claim_idempotency_key("c", "left", "d") is None
    assert [(e.kind, e.name) for e in other.stale_holds(FUTURE)] == [("idempotency-key", "c")]
    assert other.settle_stale_holds(FUTURE) == (0, 1)
    assert other.claim_idempotency_key("c", "left", "d") is None
