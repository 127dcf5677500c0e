"""A release's two durable steps together: its admission by the ledger and its audit leaf."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from gateway.domain.trail import AuditEvent
from gateway.state.ports.ledger import Admission, VerificationRequest

Made = TypeVar("Made")


class ReleaseStore(Protocol):
    """Admit a request and write the leaf built from its admission; nothing is released without
    both. On PostgreSQL both are one transaction, so a batch of requests costs one COMMIT, not
    two, and a failure leaves neither the charge nor the leaf."""

    async def admit_and_log(
        self, request: VerificationRequest, *, now: float, build: Callable[[Admission], tuple[Made, AuditEvent]]
    ) -> tuple[Admission, Made, int]:
        """The admission, what `build` made of it, and its leaf's `seq` once both are durable.
        Raises LimitReached (nothing counted, no leaf) or DependencyError (nothing durable).
        `build` must be quick, must not block, must have no side effects and must depend on the
        admission's `answers` and `repeats` only: a store may run it before it takes its locks,
        on the admission it presumes (`ledger_admission.presumed`), keep what it made when the
        ledger admits exactly that, and run it again (or never use it: a refusal) otherwise."""
        ...

    def close(self) -> None: ...
