"""The policy store's port: the bundle's lifecycle (stored versions, proposals and rollbacks,
approvals, rejections and withdrawals, the version in force) and its history.

Each bundle ever proposed is kept, content-addressed and never changed; every change is a
compare and swap on the version it was made from. Validation is the caller's: the store records
decisions, it does not make them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from gateway.atomic_files import Stamp
from gateway.domain.policy import PolicyBundle


@dataclass(frozen=True, slots=True)
class Change:
    """What happened: the version now in force (None if only proposed) and the proposal."""

    active: str | None
    proposal: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Decision:
    """A proposal closed without going in force: the proposal with its `outcome`, and the history
    entry that records who, when and why (what the request's audit leaf digests)."""

    proposal: dict[str, Any]
    entry: dict[str, Any]


class PolicyStore(Protocol):
    def stamp(self) -> Stamp | None:
        """Changes whenever the state does: a process that sees a new stamp loads the version in force."""
        ...

    def state(self) -> dict[str, Any]:
        """The whole state document: the version in force, those before, proposals, history."""
        ...

    def active_version(self) -> str | None: ...

    def proposals(self) -> dict[str, dict[str, Any]]: ...

    def history(self) -> list[dict[str, Any]]: ...

    def load(self, version: str) -> PolicyBundle: ...

    def propose(
        self, bundle: PolicyBundle, *, by: str, identity: str | None, note: str, approvals_required: int,
        base: str | None, rollback: bool = False,
    ) -> Change: ...  # fmt: skip

    def approve(self, proposal_id: str, *, by: str, identity: str, approvals_required: int) -> Change: ...

    def reject(self, proposal_id: str, *, by: str, identity: str | None, reason: str) -> Decision: ...

    def withdraw(self, proposal_id: str, *, by: str, identity: str | None, reason: str) -> Decision: ...

    def activate(self, bundle: PolicyBundle, *, by: str, reason: str, base: str | None) -> Change: ...

    def rollback_target(self) -> tuple[str | None, str]: ...

    def close(self) -> None: ...
