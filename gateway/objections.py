"""Objections and quality feedback (数据异议): a consumer disputes a dataset or a receipt, an
administrator moves the objection open -> accepted -> corrected, or rejects it, with a reply.

Imports no other leaf. One JSON document under the state directory, changed under the shared
file lock (atomic_files.locked_json). Every step is kept with who and when.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from gateway.atomic_files import locked_json
from gateway.errors import Conflict, NotFound

_EMPTY: dict[str, Any] = {"objections": {}}


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


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ObjectionStore:
    def __init__(self, path: Path) -> None:
        self._path = path

    def _all(self) -> dict[str, dict[str, Any]]:
        if not self._path.exists():
            return {}
        found: dict[str, dict[str, Any]] = json.loads(self._path.read_text(encoding="utf-8"))["objections"]
        return found

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
        with locked_json(self._path, _EMPTY) as data:
            data["objections"][made["id"]] = made
        return made

    def get(self, objection_id: str) -> dict[str, Any]:
        found = self._all().get(objection_id)
        if found is None:
            raise NotFound(f"no objection {objection_id}")
        return found

    def list(self, consumer: str | None = None) -> list[dict[str, Any]]:
        items = self._all().values()
        return sorted((o for o in items if consumer is None or o["consumer"] == consumer), key=lambda o: o["filed_at"])

    def move(self, objection_id: str, status: Status, *, reply: str, by: str) -> dict[str, Any]:
        with locked_json(self._path, _EMPTY) as data:
            found: dict[str, Any] | None = data["objections"].get(objection_id)
            if found is None:
                raise NotFound(f"no objection {objection_id}")
            current = Status(found["status"])
            if status not in NEXT[current]:
                allowed = ", ".join(sorted(s.value for s in NEXT[current])) or "nothing: it is closed"
                raise Conflict(f"an objection that is {current.value} can move to {allowed}")
            found["status"] = status.value
            found["steps"].append({"status": status.value, "reply": reply, "by": by, "at": _now()})
        return found
