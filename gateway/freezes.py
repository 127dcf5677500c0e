"""Emergency stops: which consumers, organisations, datasets and services are frozen.

Imports no other leaf. Two stores, one promise: a freeze made by any process, or by `veilgate
freeze` while the API is down, is in force in every process within moments: on the next request
of the process that made it, and on every other's first request after its recheck interval
(`state_recheck_seconds`) or the notice. Every change is kept in `history`.

- `FileFreezeStore`, the processes of one machine: one JSON file in the state directory,
  replaced whole (atomic_files) and re-read when its stamp changes; the stamp is looked at
  again at most once per recheck interval. Changes take an exclusive file lock, so two
  processes never lose each other's change.
- `PostgresFreezeStore`, replicas on several machines: rows in PostgreSQL. Each change notifies
  every replica (NOTIFY), which reloads at once; a replica whose listening connection is down
  reads the rows on every request instead, and refuses (503) while it cannot read them: a stop
  it cannot see must not be ignored.
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
from gateway.state import postgres_connections, postgres_reader, postgres_watched

Freezes = dict[tuple[FreezeKind, str], Freeze]


class FreezeStore:
    """What the request path and the administrators use, whichever store holds the freezes."""

    def active(self) -> Freezes:  # pragma: no cover - each store has its own
        raise NotImplementedError

    def history(self) -> list[dict[str, Any]]:  # pragma: no cover
        raise NotImplementedError

    def freeze(self, kind: FreezeKind, name: str, *, by: str, reason: str) -> Freeze:  # pragma: no cover
        raise NotImplementedError

    def unfreeze(self, kind: FreezeKind, name: str, *, by: str, reason: str) -> Freeze:  # pragma: no cover
        raise NotImplementedError

    def close(self) -> None:
        """Release what the store holds open (nothing, for the file)."""


def _unfrozen(kind: FreezeKind, name: str, *, by: str, reason: str) -> dict[str, Any]:
    return {"action": "unfreeze", "kind": kind.value, "name": name, "since": datetime.now(UTC).isoformat(),
            "by": by, "reason": reason}  # fmt: skip


class FileFreezeStore(FreezeStore):
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
            data["history"].append(_unfrozen(kind, name, by=by, reason=reason))
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


_PG_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS freezes (
        kind TEXT NOT NULL, name TEXT NOT NULL, record TEXT NOT NULL, PRIMARY KEY (kind, name))""",
    """CREATE TABLE IF NOT EXISTS freeze_history (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, event TEXT NOT NULL)""",
)
_CHANNEL = "veilgate_freezes"
_UNAVAILABLE = "the freezes cannot be read, so nothing is served until they can"


class PostgresFreezeStore(FreezeStore):
    """Freezes in PostgreSQL, kept in memory by every replica and renewed on each NOTIFY."""

    def __init__(self, dsn: str, *, schema: str, listen: bool = True) -> None:
        """`listen=False`: no copy in memory, every `active()` reads the rows (a CLI command, say)."""
        self._db = postgres_reader.Reader.shared(dsn, schema, unavailable=_UNAVAILABLE)
        self._db.create_tables("veilgate_freezes", _PG_SCHEMA)
        self._watched = postgres_watched.Watched(dsn, schema, channel=_CHANNEL, load=self._load, listen=listen)

    def active(self) -> Freezes:
        return self._watched.get()

    def _load(self) -> Freezes:
        rows = self._db.rows("SELECT record FROM freezes")
        frozen = (Freeze.model_validate_json(record) for (record,) in rows)
        return {(f.kind, f.name): f for f in frozen}

    def history(self) -> list[dict[str, Any]]:
        return [json.loads(event) for (event,) in self._db.rows("SELECT event FROM freeze_history ORDER BY id")]

    def freeze(self, kind: FreezeKind, name: str, *, by: str, reason: str) -> Freeze:
        made = Freeze(kind=kind, name=name, since=datetime.now(UTC), by=by, reason=reason)
        with self._db.transaction() as db:
            inserted = db.execute(
                "INSERT INTO freezes VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                (kind.value, name, made.model_dump_json()),
            ).rowcount
            if inserted != 1:
                raise Conflict(f"name: this {kind.value} is already frozen")
            self._record(db, {"action": "freeze", **made.model_dump(mode="json")})
        self._watched.renew()
        return made

    def unfreeze(self, kind: FreezeKind, name: str, *, by: str, reason: str) -> Freeze:
        with self._db.transaction() as db:
            rows = db.execute(
                "DELETE FROM freezes WHERE kind = ? AND name = ? RETURNING record", (kind.value, name)
            ).fetchall()
            if not rows:
                raise NotFound(f"name: this {kind.value} is not frozen")
            self._record(db, _unfrozen(kind, name, by=by, reason=reason))
        self._watched.renew()
        return Freeze.model_validate_json(rows[0][0])

    def import_from(self, path: Path) -> int | None:
        """Copy an installation's freezes file here (stops and history), if this store has
        neither (else None); returns the stops copied."""
        local = FileFreezeStore(path)
        tables = (("freezes", ()), ("freeze_history", ()))
        with self._db.transaction() as db:
            if not postgres_connections.is_empty(db, tables):
                return None
            stops = local.active().values()
            for stop in stops:
                db.execute("INSERT INTO freezes VALUES (?, ?, ?)", (stop.kind.value, stop.name, stop.model_dump_json()))
            for event in local.history():
                db.execute("INSERT INTO freeze_history (event) VALUES (?)", (json.dumps(event, ensure_ascii=False),))
            db.execute(f"NOTIFY {_CHANNEL}")  # a fixed name, not input
        self._watched.renew()
        return len(stops)

    @staticmethod
    def _record(db: postgres_connections.Db, event: dict[str, Any]) -> None:
        """The history row, and the notice every replica reloads on (sent when the change commits)."""
        db.execute("INSERT INTO freeze_history (event) VALUES (?)", (json.dumps(event, ensure_ascii=False),))
        db.execute(f"NOTIFY {_CHANNEL}")  # a fixed name, not input

    def close(self) -> None:
        self._watched.close()
        self._db.close()


def open_freezes(
    path: Path, *, dsn: str | None = None, schema: str = "veilgate", listen: bool = True, recheck_seconds: float = 0.0
) -> FreezeStore:
    """The freezes as configured: in PostgreSQL when `dsn` is set (changes arrive by notice),
    else the file at `path` (looked at again every `recheck_seconds`)."""
    if dsn:
        return PostgresFreezeStore(dsn, schema=schema, listen=listen)
    return FileFreezeStore(path, recheck_seconds=recheck_seconds)
