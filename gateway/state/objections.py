"""The objections' rules, for both stores: filing (a new id, status open) and the moves
`ports.objections.NEXT` allows, each step kept with who and when."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.errors import Conflict
from gateway.state.migrations import Execute, Step
from gateway.state.ports.objections import NEXT, Status

__all__ = ["STEPS", "STORE", "ObjectionRules", "apply_move", "copy_file", "row"]

STORE = "objections"
STEPS = (
    Step(
        1,
        (
            """CREATE TABLE IF NOT EXISTS objections (
            id TEXT PRIMARY KEY, consumer TEXT NOT NULL, filed_at TEXT NOT NULL, record TEXT NOT NULL)""",
        ),
    ),
)
"""1: the layout PostgreSQL had before versioned migrations (SQLite's from the start)."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def apply_move(found: dict[str, Any], status: Status, *, reply: str, by: str) -> None:
    current = Status(found["status"])
    if status not in NEXT[current]:
        allowed = ", ".join(sorted(s.value for s in NEXT[current])) or "nothing: it is closed"
        raise Conflict(f"an objection that is {current.value} can move to {allowed}")
    found["status"] = status.value
    found["steps"].append({"status": status.value, "reply": reply, "by": by, "at": _now()})


def row(objection: dict[str, Any]) -> tuple[str, str, str, str]:
    return objection["id"], objection["consumer"], objection["filed_at"], json.dumps(objection)


def copy_file(execute: Execute, path: Path) -> int | None:
    """Copy an `objections.json` (`{"objections": {id: objection}}`, the store before SQLite)
    into an empty table, in the caller's transaction; None if the file is missing or the table
    holds objections already."""
    if not path.is_file() or execute("SELECT 1 FROM objections LIMIT 1").fetchall():
        return None
    found = json.loads(path.read_text(encoding="utf-8"))["objections"].values()
    for objection in found:
        execute("INSERT INTO objections VALUES (?, ?, ?, ?)", row(objection))
    return len(found)


class ObjectionRules:
    """Filing, whichever store keeps the objections: a backend hands it `add`, which stores a
    new objection (`SqliteObjectionStore`, `PostgresObjectionStore`)."""

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
