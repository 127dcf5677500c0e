"""Objections and quality feedback (数据异议): a consumer disputes a dataset or a receipt, an
administrator moves the objection open -> accepted -> corrected, or rejects it, with a reply.

Imports no other leaf. One JSON document under the state directory, changed under the shared
file lock (atomic_files.locked_json), or rows in PostgreSQL for replicas on several machines (a
move holds its objection's row). Every step is kept with who and when.
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
from gateway.state import postgres_connections, postgres_reader

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


def _move(found: dict[str, Any], status: Status, *, reply: str, by: str) -> None:
    current = Status(found["status"])
    if status not in NEXT[current]:
        allowed = ", ".join(sorted(s.value for s in NEXT[current])) or "nothing: it is closed"
        raise Conflict(f"an objection that is {current.value} can move to {allowed}")
    found["status"] = status.value
    found["steps"].append({"status": status.value, "reply": reply, "by": by, "at": _now()})


class ObjectionStore:
    """The objections, whichever store keeps them (`FileObjectionStore`, `PostgresObjectionStore`)."""

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

    def _add(self, made: dict[str, Any]) -> None:  # pragma: no cover - each store has its own
        raise NotImplementedError

    def get(self, objection_id: str) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError

    def list(self, consumer: str | None = None) -> list[dict[str, Any]]:  # pragma: no cover
        """Oldest first; one consumer's or all."""
        raise NotImplementedError

    def move(self, objection_id: str, status: Status, *, reply: str, by: str) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError

    def close(self) -> None:
        """Release what the store holds open (nothing, for the file)."""


class FileObjectionStore(ObjectionStore):
    def __init__(self, path: Path) -> None:
        self._path = path

    def _all(self) -> dict[str, dict[str, Any]]:
        if not self._path.exists():
            return {}
        found: dict[str, dict[str, Any]] = json.loads(self._path.read_text(encoding="utf-8"))["objections"]
        return found

    def _add(self, made: dict[str, Any]) -> None:
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
            _move(found, status, reply=reply, by=by)
        return found


_PG_SCHEMA = """CREATE TABLE IF NOT EXISTS objections (
    id TEXT PRIMARY KEY, consumer TEXT NOT NULL, filed_at TEXT NOT NULL, record TEXT NOT NULL)"""
_UNAVAILABLE = "the objections cannot be read or written"


def _row(objection: dict[str, Any]) -> tuple[str, str, str, str]:
    return objection["id"], objection["consumer"], objection["filed_at"], json.dumps(objection)


class PostgresObjectionStore(ObjectionStore):
    def __init__(self, dsn: str, *, schema: str) -> None:
        self._db = postgres_reader.Reader.shared(dsn, schema, unavailable=_UNAVAILABLE)
        self._db.create_tables("veilgate_objections", (_PG_SCHEMA,))

    def _add(self, made: dict[str, Any]) -> None:
        self._db.write("INSERT INTO objections VALUES (?, ?, ?, ?)", _row(made))

    def import_from(self, path: Path) -> int | None:
        """Copy an installation's objections file here, if this store is empty (else None)."""
        found = FileObjectionStore(path).list()
        with self._db.transaction() as db:
            if not postgres_connections.is_empty(db, (("objections", ()),)):
                return None
            db.executemany("INSERT INTO objections VALUES (?, ?, ?, ?)", [_row(o) for o in found])
        return len(found)

    def get(self, objection_id: str) -> dict[str, Any]:
        rows = self._db.rows("SELECT record FROM objections WHERE id = ?", (objection_id,))
        if not rows:
            raise NotFound("objection: no objection of yours has this id")
        found: dict[str, Any] = json.loads(rows[0][0])
        return found

    def list(self, consumer: str | None = None) -> list[dict[str, Any]]:
        if consumer is None:
            rows = self._db.rows("SELECT record FROM objections ORDER BY filed_at, id")
        else:
            rows = self._db.rows("SELECT record FROM objections WHERE consumer = ? ORDER BY filed_at, id", (consumer,))
        return [json.loads(record) for (record,) in rows]

    def move(self, objection_id: str, status: Status, *, reply: str, by: str) -> dict[str, Any]:
        with self._db.transaction() as db:
            rows = db.execute("SELECT record FROM objections WHERE id = ? FOR UPDATE", (objection_id,)).fetchall()
            if not rows:
                raise NotFound("objection: no objection of yours has this id")
            found: dict[str, Any] = json.loads(rows[0][0])
            _move(found, status, reply=reply, by=by)
            db.execute("UPDATE objections SET record = ? WHERE id = ?", (json.dumps(found), objection_id))
        return found

    def close(self) -> None:
        self._db.close()


def open_objections(path: Path, *, dsn: str | None = None, schema: str = "veilgate") -> ObjectionStore:
    """The objections as configured: in PostgreSQL when `dsn` is set, else the file at `path`."""
    if dsn:
        return PostgresObjectionStore(dsn, schema=schema)
    return FileObjectionStore(path)
