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

from gateway.domain.policy import Freeze, FreezeKind, LiftRequest
from gateway.errors import Conflict, NotFound
from gateway.state.migrations import Execute
from gateway.state.ports.freezes import Freezes, LiftApproval, Unfrozen

__all__ = ["STORE", "add", "copy_file", "read_file", "remove", "unfrozen"]

STORE = "freezes"


def unfrozen(kind: FreezeKind, name: str, *, by: str, reason: str) -> dict[str, Any]:
    return {"action": "unfreeze", "kind": kind.value, "name": name, "since": datetime.now(UTC).isoformat(),
            "by": by, "reason": reason}  # fmt: skip


def add(execute: Execute, kind: FreezeKind, name: str, *, by: str, reason: str) -> Freeze:
    """Conflict if it is frozen already."""
    made = Freeze(kind=kind, name=name, since=datetime.now(UTC), by=by, reason=reason)
    inserted = execute(
        "INSERT INTO freezes VALUES (?, ?, ?) ON CONFLICT DO NOTHING", (kind.value, name, _stored(made))
    ).rowcount
    if inserted != 1:
        raise Conflict(f"name: this {kind.value} is already frozen")
    _record(execute, {"action": "freeze", **made.model_dump(mode="json")})
    return made


def remove(
    execute: Execute, kind: FreezeKind, name: str, *, by: str, reason: str, approval: LiftApproval | None = None
) -> Unfrozen:
    """Lift a stop once `approval.approvals_required` identities asked within a day (at once
    without `approval`); until then record the request on the stop, which holds. NotFound if it
    is not frozen; Conflict if this identity asked already, or if another change to the stop
    committed between the read and the write."""
    rows = execute("SELECT record FROM freezes WHERE kind = ? AND name = ?", (kind.value, name)).fetchall()
    if not rows:
        raise NotFound(f"name: this {kind.value} is not frozen")
    record = rows[0][0]
    stop = Freeze.model_validate_json(record)
    now = datetime.now(UTC)
    asked = stop.pending_lift(now)
    before = asked or LiftRequest(since=now, by=(), identities=(), reason=reason)
    who = approval.identity if approval is not None else f"client:{by}"
    if who in before.identities:
        raise Conflict(f"by: this identity asked to lift this {kind.value} already; another administrator must approve")
    request = before.model_copy(update={"by": (*before.by, by), "identities": (*before.identities, who)})
    if len(request.identities) < (approval.approvals_required if approval is not None else 1):
        waiting = stop.model_copy(update={"lift": request})
        # Written only over the record read: two requests at once cannot both count alone.
        changed = execute(
            "UPDATE freezes SET record = ? WHERE kind = ? AND name = ? AND record = ?",
            (_stored(waiting), kind.value, name, record),
        ).rowcount
        if changed != 1:
            raise Conflict(f"name: this {kind.value}'s freeze changed meanwhile; ask again")
        _record(execute, {**unfrozen(kind, name, by=by, reason=reason), "action": "lift asked"})
        return Unfrozen(waiting, lifted=False)
    deleted = execute(
        "DELETE FROM freezes WHERE kind = ? AND name = ? AND record = ?", (kind.value, name, record)
    ).rowcount
    if deleted != 1:
        raise Conflict(f"name: this {kind.value}'s freeze changed meanwhile; ask again")
    event = unfrozen(kind, name, by=by, reason=reason)
    if asked is not None:
        event["asked_by"] = list(asked.by)
    _record(execute, event)
    return Unfrozen(stop.model_copy(update={"lift": None}), lifted=True)


def _stored(stop: Freeze) -> str:
    """Without an empty `lift`: a stop nobody asked to lift reads as it did before lifts were
    approved in pairs, so a replica not yet upgraded still reads it."""
    return stop.model_dump_json(exclude_none=True)


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
        execute("INSERT INTO freezes VALUES (?, ?, ?)", (stop.kind.value, stop.name, _stored(stop)))
    for event in history:
        _record(execute, event)
    return len(stops)


def _record(execute: Execute, event: dict[str, Any]) -> None:
    execute("INSERT INTO freeze_history (event) VALUES (?)", (json.dumps(event, ensure_ascii=False),))
