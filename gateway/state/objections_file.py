"""Objections in one JSON document under the state directory (`objections.json`), for the
processes of one machine: every change under the shared file lock (`atomic_files.locked_json`),
the document replaced whole."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gateway.atomic_files import locked_json
from gateway.errors import NotFound
from gateway.state.objections import ObjectionRules, apply_move
from gateway.state.ports.objections import Status

__all__ = ["FileObjectionStore"]

_EMPTY: dict[str, Any] = {"objections": {}}


class FileObjectionStore(ObjectionRules):
    def __init__(self, path: Path) -> None:
        self._path = path
        super().__init__(add=self._add_one)

    def _all(self) -> dict[str, dict[str, Any]]:
        if not self._path.exists():
            return {}
        found: dict[str, dict[str, Any]] = json.loads(self._path.read_text(encoding="utf-8"))["objections"]
        return found

    def _add_one(self, made: dict[str, Any]) -> None:
        with locked_json(self._path, _EMPTY) as data:
            data["objections"][made["id"]] = made

    def get(self, objection_id: str) -> dict[str, Any]:
        found = self._all().get(objection_id)
        if found is None:
            raise NotFound("objection: no objection of yours has this id")
        return found

    def list(self, consumer: str | None = None) -> list[dict[str, Any]]:
        items = self._all().values()
        return sorted((o for o in items if consumer is None or o["consumer"] == consumer), key=lambda o: o["filed_at"])

    def move(self, objection_id: str, status: Status, *, reply: str, by: str) -> dict[str, Any]:
        with locked_json(self._path, _EMPTY) as data:
            found: dict[str, Any] | None = data["objections"].get(objection_id)
            if found is None:
                raise NotFound("objection: no objection of yours has this id")
            apply_move(found, status, reply=reply, by=by)
        return found

    def close(self) -> None:
        """Nothing is held open between calls."""
