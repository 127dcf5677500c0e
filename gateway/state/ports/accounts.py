"""The client accounts' port: what services may ask of the account store."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from gateway.domain.principal import Role

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
    made_by: str | None = None
    """The account that proposed this one (None: made on the host, by `veilgate clients add`)."""
    maker_identity: str | None = None
    """Its maker's identity when it was made: the identity of an account made without a person."""
    token_generation: int = 0
    """Named by every token issued to the account (claim `gen`); a token of another generation
    is void. Counted up when the account is disabled or loses a role, so that re-enabling it or
    granting the role again does not revive the tokens issued before."""

    @property
    def identity(self) -> str:
        """The person; else, for an account an administrator made, that administrator's identity
        (SECURITY: leaving the person out must not make an account of another identity, to submit
        a job from and review it, say); else the organisation, so that two accounts without a
        person never make two approvals."""
        if self.person:
            return f"person:{self.person}"
        return self.maker_identity or f"org:{self.organisation}"


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

    def disable(self, client_id: str, *, approvals_required: int) -> Account:
        """Disable at once (taking access away): its tokens stop on the next request. Refused
        (Conflict) if it would leave fewer administrators than it takes to approve a change."""
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
