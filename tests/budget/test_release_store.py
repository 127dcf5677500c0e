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
