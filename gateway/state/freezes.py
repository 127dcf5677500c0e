"""What both freeze stores share: the rows of a stop and of its history, the change rules, and
the JSON file (`freezes.json`) an installation kept its stops in before SQLite.

Every function takes the caller's transaction (`migrations.Execute`, `?` placeholders on both
backends), so a stop and its history row are committed together or not at all.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.domain.policy import Freeze, FreezeKind
from gateway.errors import Conflict, NotFound
from gateway.state.migrations import Execute
from gateway.state.ports.freezes import Freezes

__all__ = ["STORE", "add", "copy_file", "read_file", "remove", "unfrozen"]

STORE = "freezes"


def unfrozen(kind: FreezeKind, name: str, *, by: str, reason: str) -> dict[str, Any]:
    return {"action": "unfreeze", "kind": kind.value, "name": name, "since": datetime.now(UTC).isoformat(),
            "by": by, "reason": reason}  # fmt: skip


def add(execute: Execute, kind: FreezeKind, name: str, *, by: str, reason: str) -> Freeze:
    """Conflict if it is frozen already."""
    made = Freeze(kind=kind, name=name, since=datetime.now(UTC), by=by, reason=reason)
    inserted = execute(
        "INSERT INTO freezes VALUES (?, ?, ?) ON CONFLICT DO NOTHING", (kind.value, name, made.model_dump_json())
    ).rowcount
    if inserted != 1:
        raise Conflict(f"name: this {kind.value} is already frozen")
    _record(execute, {"action": "freeze", **made.model_dump(mode="json")})
    return made


def remove(execute: Execute, kind: FreezeKind, name: str, *, by: str, reason: str) -> Freeze:
    """NotFound if it is not frozen."""
    rows = execute("SELECT record FROM freezes WHERE kind = ? AND name = ?", (kind.value, name)).fetchall()
    if not rows or execute("DELETE FROM freezes WHERE kind = ? AND name = ?", (kind.value, name)).rowcount != 1:
        raise NotFound(f"name: this {kind.value} is not frozen")
    _record(execute, unfrozen(kind, name, by=by, reason=reason))
    return Freeze.model_validate_json(rows[0][0])


def read_file(path: Path) -> tuple[Freezes, list[dict[str, Any]]]:
    """The stops and history of a `freezes.json` (`{"active": [...], "history": [...]}`)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    stops = (Freeze.model_validate(item) for item in data["active"])
    return {(f.kind, f.name): f for f in stops}, list(data["history"])


def copy_file(execute: Execute, path: Path) -> int | None:
    """Copy a `freezes.json` into empty tables, in the caller's transaction: the number of stops
    copied, or None if the file is missing or the tables hold stops or history already."""
    if not path.is_file() or execute("SELECT 1 FROM freezes UNION ALL SELECT 1 FROM freeze_history").fetchall():
        return None
    stops, history = read_file(path)
    for stop in stops.values():
        execute("INSERT INTO freezes VALUES (?, ?, ?)", (stop.kind.value, stop.name, stop.model_dump_json()))
    for event in history:
        _record(execute, event)
    return len(stops)


def _record(execute: Execute, event: dict[str, Any]) -> None:
    execute("INSERT INTO freeze_history (event) VALUES (?)", (json.dumps(event, ensure_ascii=False),))
