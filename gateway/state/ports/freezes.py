"""The emergency stops' port: which consumers, organisations, datasets and services are frozen.

A freeze made by any process, or by `veilgate freeze` while the API is down, is in force on the
next request of every process; every change is kept in the history.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from gateway.domain.policy import Freeze, FreezeKind

Freezes = dict[tuple[FreezeKind, str], Freeze]


@dataclass(frozen=True, slots=True)
class LiftApproval:
    """Who asks to lift a stop through the API or the console, and how many identities must."""

    identity: str
    """The caller's (`AccountStore.identity_of`): two requests count once per identity."""
    approvals_required: int


@dataclass(frozen=True, slots=True)
class Unfrozen:
    freeze: Freeze
    """The stop as it was lifted, or as it now waits with its lift request."""
    lifted: bool


class FreezeStore(Protocol):
    def active(self) -> Freezes:
        """What is frozen now: read on every request, so cheap when nothing changed."""
        ...

    def history(self) -> list[dict[str, Any]]: ...

    def freeze(self, kind: FreezeKind, name: str, *, by: str, reason: str) -> Freeze:
        """Conflict if it is frozen already."""
        ...

    def unfreeze(
        self, kind: FreezeKind, name: str, *, by: str, reason: str, approval: LiftApproval | None = None
    ) -> Unfrozen:
        """Lift the stop once `approval.approvals_required` identities asked within a day; until
        then it holds and keeps the request. NotFound if it is not frozen; Conflict if this
        identity asked already. Without `approval` (the host's `veilgate unfreeze`, as it does
        everything else) it lifts at once."""
        ...

    def close(self) -> None: ...
