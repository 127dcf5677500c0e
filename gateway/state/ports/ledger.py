"""The verification ledger's port: rates, quotas, probing, repeated claims, billing, alerts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.domain.limits import VerificationLimits


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


class LedgerStore(Protocol):
    """Rate, quota and probing state that must hold across processes, the answers of repeated
    claims, billing and alerts. An admission checks every limit and counts what it admits in one
    transaction: a limit holds exactly across every process and replica."""

    def bind_pseudonyms(self, key_id: str) -> None:
        """Refuse (ConfigurationError) a ledger written with pseudonyms of another subject secret."""
        ...

    def admit_verification(self, request: VerificationRequest, *, now: float) -> Admission:
        """Check every limit and count the request; raises LimitReached, having counted nothing."""
        ...

    async def admit_verification_async(self, request: VerificationRequest, *, now: float) -> Admission: ...

    def usage(self, grant: str) -> list[tuple[str, str, str, int, int, int]]: ...

    def monthly_usage(self) -> list[tuple[str, str, int, int]]: ...

    def billing(self, since: str, until: str, consumer: str | None = None) -> list[BillingRow]: ...

    def raise_alert(self, kind: str, subject: str, message: str) -> None: ...

    def alerts(self, since: str | None = None, limit: int = 1000) -> list[dict[str, Any]]: ...

    def prune(self, now: float) -> None: ...

    def close(self) -> None: ...
