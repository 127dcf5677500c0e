"""What the services may ask of each store, whatever the backend (`typing.Protocol`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from gateway.domain.limits import VerificationLimits
from gateway.domain.principal import Role
from gateway.domain.trail import AuditEvent, AuditLeaf, Checkpoint, Decision

PRIVILEGED = frozenset({Role.ADMIN, Role.AUDITOR})
"""Roles granted and withdrawn only by a change a second person approves."""

AccountAction = Literal["create", "roles", "disable", "enable"]


@dataclass(frozen=True, slots=True)
class Account:
    """A client account. `person` names who holds it: every account of one person carries the
    same name, and two approvals must come from two identities, not two client ids."""

    client_id: str
    organisation: str
    roles: frozenset[Role]
    secret_hash: str
    created_at: datetime
    disabled: bool = False
    person: str | None = None
    revision: int = 0
    """Counts the account's changes: a proposal applies only to the revision it was made from."""

    @property
    def identity(self) -> str:
        """The person, or else the organisation: accounts without a person share their
        organisation's identity, so two of them never make two approvals."""
        return f"person:{self.person}" if self.person else f"org:{self.organisation}"


@dataclass(frozen=True, slots=True)
class AccountChange:
    """What a change did: the account as it is now (None while a proposal waits), the open
    proposal if any, and the secret or the half of it shown to this caller (else None)."""

    account: Account | None
    proposal: dict[str, Any] | None
    secret: str | None = None


class AccountStore(Protocol):
    """The client accounts and the proposals that change privileged ones. Every change is one
    transaction; a proposal records the account's revision and applies only to it."""

    def find(self, client_id: str) -> Account | None: ...

    def all(self) -> list[Account]: ...

    def check_credentials(self, client_id: str, secret: str) -> Account | None:
        """The enabled account these credentials belong to, or None; the same cost either way."""
        ...

    def identity_of(self, client_id: str) -> str:
        """The identity two approvals must differ in (a client id nobody holds is its own)."""
        ...

    def add(self, client_id: str, organisation: str, roles: Iterable[Role], *, person: str | None = None) -> str:
        """Create an account at once and return its secret, shown once: for roles that are not
        privileged, and for setting up an installation."""
        ...

    def disable(self, client_id: str) -> Account:
        """Disable at once (taking access away): its tokens stop on the next request."""
        ...

    def propose(
        self,
        action: AccountAction,
        client_id: str,
        *,
        by: str,
        approvals_required: int,
        organisation: str | None = None,
        roles: Iterable[Role] | None = None,
        person: str | None = None,
    ) -> AccountChange: ...

    def approve(self, proposal_id: str, *, by: str, approvals_required: int) -> AccountChange: ...

    def proposals(self) -> list[dict[str, Any]]:
        """The open proposals, without any part of a secret."""
        ...

    def close(self) -> None: ...


# -- the verification ledger ---------------------------------------------------------------


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


# -- the audit log -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredLeaf:
    """A row as stored, unparsed: what `veilgate audit verify` checks."""

    seq: int
    record: bytes
    hash: bytes


@dataclass(frozen=True, slots=True)
class LeafFilter:
    since: str | None = None
    until: str | None = None
    principal: str | None = None
    service: str | None = None
    dataset: str | None = None
    decision: Decision | None = None


class AuditLogStore(Protocol):
    """The append-only audit trail: leaves numbered in one total order, a Merkle tree over them,
    signed checkpoints. An append resolves only once its leaf is durable."""

    def pseudonym(self, kind: str, key: str) -> str: ...

    def pseudonym_key_id(self) -> str: ...

    def append(self, event: AuditEvent) -> Future[int]: ...

    def append_now(self, event: AuditEvent) -> int: ...

    async def append_async(self, event: AuditEvent) -> int: ...

    def size(self) -> int: ...

    def root(self, size: int) -> bytes: ...

    def inclusion_proof(self, index: int, size: int) -> tuple[bytes, list[bytes]]: ...

    def consistency_proof(self, first: int, second: int) -> list[bytes]: ...

    def leaf(self, seq: int) -> AuditLeaf | None: ...

    def find(self, where: LeafFilter, *, after: int = -1, limit: int = 100) -> list[AuditLeaf]: ...

    def find_subject(self, pseudonym: str, *, limit: int = 10_000) -> list[AuditLeaf]: ...

    def stored(self, *, batch: int = 10_000) -> Iterator[StoredLeaf]: ...

    def add_checkpoint(self, checkpoint: Checkpoint) -> bool: ...

    def checkpoints(self, *, after_size: int = -1, limit: int = 1000) -> list[Checkpoint]: ...

    def latest_checkpoint(self) -> Checkpoint | None: ...

    def close(self) -> None: ...
