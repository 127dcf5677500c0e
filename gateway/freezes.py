"""Emergency stops: which consumers, organisations, datasets and services are frozen.

Imports no other leaf. One JSON file in the state directory, replaced whole (atomic_files) and
re-read when its stamp changes, so a freeze made by any process, or by `veilgate freeze` while
the API is down, takes effect on the next request of every process. Changes take an exclusive
file lock, so two processes never lose each other's change. Every change is kept in `history`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.atomic_files import Stamp, locked_json, stamp
from gateway.domain.policy import Freeze, FreezeKind
from gateway.errors import Conflict, NotFound

Freezes = dict[tuple[FreezeKind, str], Freeze]


class FreezeStore:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._cache: tuple[Stamp, Freezes] | None = None
        self._lock = threading.Lock()

    def active(self) -> Freezes:
        """What is frozen now; one stat per call when nothing changed."""
        current = stamp(self._path)
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
                raise Conflict(f"{kind.value} {name!r} is already frozen")
            made = Freeze(kind=kind, name=name, since=datetime.now(UTC), by=by, reason=reason)
            data["active"].append(made.model_dump(mode="json"))
            data["history"].append({"action": "freeze", **made.model_dump(mode="json")})
        return made

    def unfreeze(self, kind: FreezeKind, name: str, *, by: str, reason: str) -> Freeze:
        with self._changing() as data:
            found = next((i for i in data["active"] if i["kind"] == kind.value and i["name"] == name), None)
            if found is None:
                raise NotFound(f"{kind.value} {name!r} is not frozen")
            data["active"].remove(found)
            data["history"].append(
                {
                    "action": "unfreeze",
                    "kind": kind.value,
                    "name": name,
                    "since": datetime.now(UTC).isoformat(),
                    "by": by,
                    "reason": reason,
                }
            )
        return Freeze.model_validate(found)

    def _load(self) -> dict[str, Any]:
        if not self._path.exists():
            return {"active": [], "history": []}
        loaded: dict[str, Any] = json.loads(self._path.read_text(encoding="utf-8"))
        return loaded

    @contextmanager
    def _changing(self) -> Iterator[dict[str, Any]]:
        with self._lock, locked_json(self._path, {"active": [], "history": []}) as data:
            yield data
