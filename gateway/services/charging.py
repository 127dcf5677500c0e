"""Charged releases: the privacy-budget protocol that aggregates, model fits and job outputs share.

The payer of a charge is its grant account (one grant of one consumer on one dataset). For a
list of computations, each with its question key, amount and budget accounts:
1. a question this payer already paid for gets its stored release again, at no charge (reads
   only);
2. the other keys are held in the ledger for their payer, all or none, across processes and
   replicas; while another request of the same payer holds one, this one waits for its answer
   (polling, bounded by `HOLD_WAIT_SECONDS`, then 409 with Retry-After); a hold older than
   `HOLD_EXPIRES_SECONDS` was left by a crash and is taken over. SECURITY: a hold is the
   payer's own: a request never waits on another payer's, so its timing says nothing of them;
3. under the holds: a question this payer paid for meanwhile is replayed free; the charges of
   the rest are reserved together, all or none, on their three accounts;
4. every question charged is computed, even one another payer stored (SECURITY: it is charged
   and takes the time of a new question, so no consumer learns that someone else asked, nor
   when; see docs/privacy-model.md): the computation calls `reading` once data is about to be
   read, which the ledger records (`mark_reading`), and from then on its charge stays, whatever
   happens, even a crash;
5. the charge is committed, the release stored (unless another payer's, stored first, is the
   answer: its computation is then discarded unseen) and the payer recorded in one transaction;
6. a reservation whose computation never read data is returned, and the holds are dropped.
"""

from __future__ import annotations

import contextlib
import functools
import json
import random
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from gateway.domain.aggregate import epsilon_text
from gateway.domain.budget import Accounts, Amount
from gateway.domain.canonical_json import canonical_text
from gateway.domain.trail import Json
from gateway.errors import Conflict, NotFound
from gateway.services.needs import HasBudget
from gateway.state.ports import Holding


class ChargingNeeds(HasBudget, Protocol):
    """A charged release reads and writes the budget ledger only."""


Compute = Callable[[Callable[[], None]], Json]
"""Runs the computation; calls its argument just before the first data is read."""

HOLD_WAIT_SECONDS = 30.0
"""How long a request waits for another's answer to the same question before it is told to retry."""
HOLD_EXPIRES_SECONDS = 900
"""A hold (or a running idempotency key) older than this was left by a crash: longer than any
computation, which the sandbox and query limits stop well before."""
_POLL_SECONDS = (0.02, 0.25)


@dataclass(frozen=True, slots=True)
class Charge:
    key: str
    amount: Amount
    accounts: Accounts
    compute: Compute
    service: str = ""
    """The service the release is for: its spend shows under it in usage and public disclosure."""

    @property
    def payer(self) -> str:
        return self.accounts.grant


def expired_before(now: datetime | None = None) -> str:
    """Holds and running idempotency keys taken before this (ISO time) were left by a crash."""
    return ((now or datetime.now(UTC)) - timedelta(seconds=HOLD_EXPIRES_SECONDS)).isoformat()


def _hold(rt: ChargingNeeds, pairs: list[tuple[str, str]], holder: str) -> Holding:
    """Step 2: hold every (key, payer) pair, waiting while another request of the payer holds one."""
    deadline = time.monotonic() + HOLD_WAIT_SECONDS
    delay = _POLL_SECONDS[0]
    while True:
        holding = rt.budget.hold_releases(pairs, holder, expired_before=expired_before())
        if not holding.busy:
            return holding
        if time.monotonic() + delay > deadline:
            raise Conflict(
                "the same question is being answered for another of your requests; retry shortly to get its answer",
                headers={"Retry-After": "2"},
            )
        time.sleep(delay * (0.5 + random.random()))  # noqa: S311 - jitter, not a secret
        delay = min(delay * 2, _POLL_SECONDS[1])


def run(rt: ChargingNeeds, charges: Sequence[Charge]) -> list[tuple[Json, bool]]:
    """Each computation's release, and whether this request paid for it (steps 1 to 6)."""
    replays: dict[int, str] = {}
    for i, charge in enumerate(charges):
        found = rt.budget.paid_release(charge.key, charge.payer)
        if found is not None:
            replays[i] = found
    rest = [i for i in range(len(charges)) if i not in replays]
    if not rest:
        return [(json.loads(replays[i]), False) for i in range(len(charges))]
    holder = secrets.token_hex(12)
    reservations: dict[int, str] = {}
    started: set[int] = set()
    committed: set[int] = set()
    try:
        holding = _hold(rt, [(charges[i].key, charges[i].payer) for i in rest], holder)
        stored = dict(holding.stored)
        paying: list[int] = []
        seen: set[tuple[str, str]] = set(holding.paid)
        for i in rest:
            pair = (charges[i].key, charges[i].payer)
            if pair in seen:
                continue  # paid before, or by an earlier copy in this batch
            seen.add(pair)
            paying.append(i)
        made = rt.budget.reserve_all(
            [(charges[i].accounts, charges[i].amount) for i in paying], [charges[i].service for i in paying]
        )
        reservations = dict(zip(paying, made, strict=True))

        def reading(i: int) -> None:
            if i not in started:
                rt.budget.mark_reading(reservations[i])  # refused if the reservation was given back
                started.add(i)

        results: list[tuple[Json, bool]] = []
        for i, charge in enumerate(charges):
            if i in replays:
                results.append((json.loads(replays[i]), False))
            elif i not in reservations:  # paid: replayed free
                results.append((json.loads(stored[charge.key]), False))
            else:
                result = canonical_text(charge.compute(functools.partial(reading, i)))
                # the first release stored wins: another payer's, or an earlier copy in this batch
                stored[charge.key] = rt.budget.commit_release(reservations[i], charge.key, result, charge.payer)
                committed.add(i)
                results.append((json.loads(stored[charge.key]), True))
        return results
    finally:
        for i, reservation in reservations.items():
            if i in committed:
                continue
            if i not in started:
                with contextlib.suppress(NotFound):  # given back already (`settle_stale`)
                    rt.budget.release(reservation)  # never read: give it back
            else:
                rt.budget.commit(reservation)  # read, then failed: the charge stays
        rt.budget.drop_holds(holder)


def amount_json(amount: Amount) -> Json:
    """An amount as exact decimal strings, as every response that shows a charge or a budget writes it."""
    return {"epsilon": epsilon_text(amount.micro_epsilon), "delta": format(amount.delta.normalize(), "f")}
