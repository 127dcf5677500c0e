"""The objections' rules, for both stores: filing (a new id, status open) and the moves
`ports.objections.NEXT` allows, each step kept with who and when."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from gateway.errors import Conflict
from gateway.state.ports.objections import NEXT, Status

__all__ = ["ObjectionRules", "apply_move"]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def apply_move(found: dict[str, Any], status: Status, *, reply: str, by: str) -> None:
    current = Status(found["status"])
    if status not in NEXT[current]:
        allowed = ", ".join(sorted(s.value for s in NEXT[current])) or "nothing: it is closed"
        raise Conflict(f"an objection that is {current.value} can move to {allowed}")
    found["status"] = status.value
    found["steps"].append({"status": status.value, "reply": reply, "by": by, "at": _now()})


class ObjectionRules:
    """Filing, whichever store keeps the objections: a backend hands it `add`, which stores a
    new objection (`FileObjectionStore`, `PostgresObjectionStore`)."""

    def __init__(self, *, add: Callable[[dict[str, Any]], None]) -> None:
        self._add = add

    def file(self, *, consumer: str, about: str, subject: str, text: str) -> dict[str, Any]:
        made = {
            "id": secrets.token_hex(6),
            "consumer": consumer,
            "about": about,
            "subject": subject,
            "text": text,
            "status": Status.OPEN.value,
            "filed_at": _now(),
            "steps": [],
        }
        self._add(made)
        return made
