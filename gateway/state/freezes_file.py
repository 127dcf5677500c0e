"""Emergency stops in one JSON file under the state directory (`freezes.json`), for the
processes of one machine.

The file is replaced whole (`atomic_files`) and re-read when its stamp changes; the stamp is
looked at again at most once per recheck interval (`state_recheck_seconds`), and a change made
here is seen at once. A change takes an exclusive file lock, so two processes, or `veilgate
freeze` while the API is down, never lose each other's change.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.atomic_files import CachedStamp, Stamp, locked_json
from gateway.domain.policy import Freeze, FreezeKind
from gateway.errors import Conflict, NotFound
from gateway.state.ports.freezes import Freezes

__all__ = ["FileFreezeStore", "unfrozen"]


def unfrozen(kind: FreezeKind, name: str, *, by: str, reason: str) -> dict[str, Any]:
    return {"action": "unfreeze", "kind": kind.value, "name": name, "since": datetime.now(UTC).isoformat(),
            "by": by, "reason": reason}  # fmt: skip


class FileFreezeStore:
    def __init__(self, path: Path, *, recheck_seconds: float = 0.0) -> None:
        """`recheck_seconds`: how long `active` may answer from memory before it looks for
        another process's change (0: on every call). A change made here is seen at once."""
        self._path = path
        self._stamp = CachedStamp(path, recheck_seconds)
        self._cache: tuple[Stamp, Freezes] | None = None
        self._lock = threading.Lock()

    def active(self) -> Freezes:
        """What is frozen now; at most one stat per recheck interval when nothing changed."""
        current = self._stamp.get()
        if current is None:
            return {}
        cached = self._cache
        if cached is not None and cached[0] == current:
            return cached[1]
        frozen = {(f.kind, f.name): f for f in (Freeze.model_validate(i) for i in self._load()["active"])}
        self._cache = (current, frozen)
        return frozen

    def history(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = self._load()["history"]
        return events

    def freeze(self, kind: FreezeKind, name: str, *, by: str, reason: str) -> Freeze:
        with self._changing() as data:
            if any(i["kind"] == kind.value and i["name"] == name for i in data["active"]):
                raise Conflict(f"name: this {kind.value} is already frozen")
            made = Freeze(kind=kind, name=name, since=datetime.now(UTC), by=by, reason=reason)
            data["active"].append(made.model_dump(mode="json"))
            data["history"].append({"action": "freeze", **made.model_dump(mode="json")})
        return made

    def unfreeze(self, kind: FreezeKind, name: str, *, by: str, reason: str) -> Freeze:
        with self._changing() as data:
            found = next((i for i in data["active"] if i["kind"] == kind.value and i["name"] == name), None)
            if found is None:
                raise NotFound(f"name: this {kind.value} is not frozen")
            data["active"].remove(found)
            data["history"].append(unfrozen(kind, name, by=by, reason=reason))
        return Freeze.model_validate(found)

    def _load(self) -> dict[str, Any]:
        if not self._path.exists():
            return {"active": [], "history": []}
        loaded: dict[str, Any] = json.loads(self._path.read_text(encoding="utf-8"))
        return loaded

    @contextmanager
    def _changing(self) -> Iterator[dict[str, Any]]:
        try:
            with self._lock, locked_json(self._path, {"active": [], "history": []}) as data:
                yield data
        finally:
            self._stamp.forget()

    def close(self) -> None:
        """Nothing is held open between calls."""
