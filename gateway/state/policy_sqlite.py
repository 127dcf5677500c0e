"""The policy store in one SQLite file (`state/policy/policy.sqlite3`), for the processes of one
machine: versions and the state document in two tables, as on PostgreSQL.

A change is a read-modify-write of the state's row in one BEGIN IMMEDIATE transaction, so two
processes take turns. The stamp is the state's change count, kept in memory and read again only
when `PRAGMA data_version` says another connection committed; that is asked at most once per
recheck interval (`state_recheck_seconds`), and a change made here is seen at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.atomic_files import Recheck, Stamp
from gateway.domain.policy import PolicyBundle
from gateway.errors import NotFound
from gateway.state import sqlite_connections
from gateway.state.policy import STEPS, STORE, PolicyRules, copy_directory, pretty

__all__ = ["SqlitePolicyStore"]

log = logging.getLogger("veilgate.policy")
_UNAVAILABLE = "the policy store cannot be read"


class SqlitePolicyStore(PolicyRules):
    def __init__(self, path: Path, *, import_from: Path | None = None, recheck_seconds: float = 0.0) -> None:
        """`import_from`: the directory the store kept its files in before (`versions/`,
        `state.json`), copied in on first open; `state.json` is then renamed `state.json.imported`
        and `versions/` left as it is, neither read again. `recheck_seconds`: how long `stamp` may
        answer from memory before it looks for another process's commit (0: on every call)."""
        self._conn = sqlite_connections.open_wal(path)
        self._lock = threading.Lock()
        self._recheck = Recheck(recheck_seconds)
        self._cache: tuple[int, int] | None = None  # (data_version, changes)
        self._inside = threading.local()  # `writing`: this thread holds the lock, in its transaction
        super().__init__(read=self._read_state, changing=self._changing_state, keep=self._keep, load=self.load)
        copy = (lambda execute: copy_directory(execute, import_from)) if import_from is not None else None
        copied = sqlite_connections.migrate_and_import(self._conn, self._lock, _UNAVAILABLE, STORE, STEPS, copy=copy)
        if copied is not None and import_from is not None:
            sqlite_connections.keep_as_imported(import_from / "state.json", copied, path, log, "policy versions")

    def stamp(self) -> Stamp | None:
        due, cached = self._recheck.due(), self._cache  # the interval starts at the first look
        if cached is not None and not due:
            return (cached[1], 0)
        with sqlite_connections.reading(self._conn, self._lock, _UNAVAILABLE) as conn:
            (version,) = conn.execute("PRAGMA data_version").fetchone()
            if self._cache is not None and self._cache[0] == version:
                return (self._cache[1], 0)
            (changes,) = conn.execute("SELECT changes FROM policy_state WHERE id = 1").fetchone()
            self._cache = (int(version), int(changes))
            return (int(changes), 0)

    def _read_state(self) -> dict[str, Any]:
        with sqlite_connections.reading(self._conn, self._lock, _UNAVAILABLE) as conn:
            (text,) = conn.execute("SELECT state FROM policy_state WHERE id = 1").fetchone()
        state: dict[str, Any] = json.loads(text)
        return state

    @contextlib.contextmanager
    def _changing_state(self) -> Iterator[dict[str, Any]]:
        try:
            with sqlite_connections.immediate(self._conn, self._lock, _UNAVAILABLE) as conn:
                (text,) = conn.execute("SELECT state FROM policy_state WHERE id = 1").fetchone()
                state: dict[str, Any] = json.loads(text)
                self._inside.writing = True  # the rules load the version in force for a diff
                try:
                    yield state
                finally:
                    self._inside.writing = False
                conn.execute(
                    "UPDATE policy_state SET state = ?, changes = changes + 1 WHERE id = 1",
                    (json.dumps(state, ensure_ascii=False),),
                )
        finally:
            self._cache = None  # data_version does not count this connection's own commits

    def load(self, version: str) -> PolicyBundle:
        query = "SELECT bundle FROM policy_versions WHERE version = ?"
        if getattr(self._inside, "writing", False):
            rows = self._conn.execute(query, (version,)).fetchall()
        else:
            with sqlite_connections.reading(self._conn, self._lock, _UNAVAILABLE) as conn:
                rows = conn.execute(query, (version,)).fetchall()
        if not rows:
            raise NotFound(f"no stored policy version {version}")
        return PolicyBundle.model_validate_json(rows[0][0])

    def _keep(self, bundle: PolicyBundle) -> str:
        with sqlite_connections.immediate(self._conn, self._lock, _UNAVAILABLE) as conn:
            conn.execute(
                "INSERT INTO policy_versions VALUES (?, ?) ON CONFLICT DO NOTHING", (bundle.version, pretty(bundle))
            )
        return bundle.version

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._conn.close()
