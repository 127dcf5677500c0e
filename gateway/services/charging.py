"""Charged releases: the privacy-budget protocol that aggregates and model fits share.

For a list of computations, each with its question key, amount and budget accounts:
1. a question released before (same key) gets its stored release again, at no charge;
2. the rest are reserved together, all or none, on their three accounts;
3. each is computed; the computation calls `reading` once data is about to be read, which the
   ledger records (`mark_reading`), and from then on its charge stays, whatever happens, even a
   crash;
4. the charge is committed and the release stored in one transaction; a release that an
   identical concurrent question stored first wins, so one question has one answer;
5. a reservation whose computation never read data is returned.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.domain.budget import Accounts, Amount
from gateway.domain.trail import Json
from gateway.errors import NotFound
from gateway.services.runtime import Runtime

Compute = Callable[[Callable[[], None]], Json]
"""Runs the computation; calls its argument just before the first data is read."""


@dataclass(frozen=True, slots=True)
class Charge:
    key: str
    amount: Amount
    accounts: Accounts
    compute: Compute


def run(rt: Runtime, charges: Sequence[Charge]) -> list[tuple[Json, bool]]:
    """Each computation's release, and whether this request paid for it (steps 1 to 5)."""
    stored: dict[int, str] = {}
    for i, charge in enumerate(charges):
        found = rt.budget.stored_release(charge.key)
        if found is not None:
            stored[i] = found
    fresh = [i for i in range(len(charges)) if i not in stored]
    made = rt.budget.reserve_all([(charges[i].accounts, charges[i].amount) for i in fresh])
    reservations = dict(zip(fresh, made, strict=True))
    results: list[tuple[Json, bool]] = []
    started: set[int] = set()
    committed: set[int] = set()

    def reading(i: int) -> None:
        if i not in started:
            rt.budget.mark_reading(reservations[i])  # refused if the reservation was given back
            started.add(i)

    try:
        for i, charge in enumerate(charges):
            if i in stored:
                results.append((json.loads(stored[i]), False))
                continue
            released = charge.compute(functools.partial(reading, i))
            kept = rt.budget.commit_release(reservations[i], charge.key, json.dumps(released, sort_keys=True))
            committed.add(i)
            results.append((json.loads(kept), True))
    finally:
        for i, reservation in reservations.items():
            if i not in started:
                with contextlib.suppress(NotFound):  # given back already (`settle_stale`)
                    rt.budget.release(reservation)  # never read: give it back
            elif i not in committed:
                rt.budget.commit(reservation)  # read, then failed: the charge stays
    return results
