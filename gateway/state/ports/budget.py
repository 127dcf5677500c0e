"""The privacy-budget ledger's port: reservations on three accounts at once, their charges,
stored releases and the holds that make one question one charge, idempotency keys, and what
was spent, by day.

A reservation is `reserved`, then `reading` once its computation is about to read data (from
then on its charge stays), then `committed`; a crash leaves it counted, never overspent.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.domain.budget import Accounts, Amount


@dataclass(frozen=True, slots=True)
class StaleReservation:
    id: str
    state: str
    """`reserved` (no data was read: it may be given back) or `reading` (the charge stays)."""
    amount: Amount
    created: str
    accounts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Balance:
    spent: Amount
    reserved: Amount


@dataclass(frozen=True, slots=True)
class IdempotentReplay:
    request_digest: str
    state: str
    """`running` (another request holds the key) or `done` (`body` is the answer to replay)."""
    body: str | None


@dataclass(frozen=True, slots=True)
class Holding:
    """What `hold_releases` found. With `busy` empty, this request holds every pair asked."""

    busy: tuple[tuple[str, str], ...]
    """(key, payer) pairs another live request holds: then nothing was taken."""
    stored: dict[str, str]
    """The stored release of each key that has one."""
    paid: frozenset[tuple[str, str]]
    """The (key, payer) pairs asked that are already paid for."""


@dataclass(frozen=True, slots=True)
class StaleEntry:
    """A hold or a running idempotency key older than the cut-off: a crash left it."""

    kind: str
    """`hold` or `idempotency-key`."""
    name: str
    created: str


@dataclass(frozen=True, slots=True)
class SpendingRow:
    consumer: str
    grant: str
    service: str
    dataset: str
    day: str
    releases: int
    micro_epsilon: int
    nano_delta: int


class BudgetStore(Protocol):
    """Every operation is one transaction; a reservation is refused (BudgetExhausted) if any of
    its accounts would exceed its cap."""

    def reserve(self, accounts: Accounts, amount: Amount) -> str: ...

    def reserve_all(self, charges: Sequence[tuple[Accounts, Amount]], services: Sequence[str] = ()) -> list[str]: ...

    def commit(self, reservation: str) -> None: ...

    def mark_reading(self, reservation: str) -> None: ...

    def release(self, reservation: str) -> None: ...

    def stale(self, older_than: str) -> list[StaleReservation]: ...

    def settle_stale(self, older_than: str) -> tuple[int, int]: ...

    def has_history(self) -> bool: ...

    def balance(self, account: str) -> Balance: ...

    def stored_release(self, query_key: str) -> str | None: ...

    def paid_release(self, query_key: str, payer: str) -> str | None: ...

    def hold_releases(self, pairs: Iterable[tuple[str, str]], holder: str, *, expired_before: str) -> Holding: ...

    def drop_holds(self, holder: str) -> None: ...

    def commit_release(self, reservation: str, query_key: str, result: str, payer: str = "") -> str: ...

    def claim_idempotency_key(
        self, consumer: str, key: str, request_digest: str, *, expired_before: str = ""
    ) -> IdempotentReplay | None: ...

    def finish_idempotency_key(self, consumer: str, key: str, body: str | None) -> None: ...

    def stale_holds(self, older_than: str) -> list[StaleEntry]: ...

    def settle_stale_holds(self, older_than: str) -> tuple[int, int]: ...

    def spending(self, since: str, until: str, consumer: str | None = None) -> list[SpendingRow]: ...

    def monthly_spending(self) -> list[tuple[str, str, str, int, int, int]]: ...

    def close(self) -> None: ...
