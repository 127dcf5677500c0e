"""The objections' port (数据异议): a consumer disputes a dataset or a receipt, an administrator
moves the objection open -> accepted -> corrected, or rejects it, with a reply. Every step is
kept with who and when."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Protocol


class Status(StrEnum):
    OPEN = "open"
    ACCEPTED = "accepted"
    CORRECTED = "corrected"
    REJECTED = "rejected"


NEXT: dict[Status, frozenset[Status]] = {
    Status.OPEN: frozenset({Status.ACCEPTED, Status.REJECTED}),
    Status.ACCEPTED: frozenset({Status.CORRECTED, Status.REJECTED}),
    Status.CORRECTED: frozenset(),
    Status.REJECTED: frozenset(),
}


class ObjectionStore(Protocol):
    def file(self, *, consumer: str, about: str, subject: str, text: str) -> dict[str, Any]: ...

    def get(self, objection_id: str) -> dict[str, Any]: ...

    def list(self, consumer: str | None = None) -> list[dict[str, Any]]:
        """Oldest first; one consumer's or all."""
        ...

    def move(self, objection_id: str, status: Status, *, reply: str, by: str) -> dict[str, Any]:
        """Conflict unless `NEXT` allows the move; NotFound for an unknown id."""
        ...

    def close(self) -> None: ...
