"""The policy store in PostgreSQL, for replicas on several machines: versions and the state
document in two tables. A change holds the state's row (`FOR UPDATE`) and NOTIFYs every
replica, which sees a new stamp (the state's change count, kept in memory and renewed on each
notice) and loads the version in force."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gateway.atomic_files import Stamp
from gateway.domain.policy import PolicyBundle
from gateway.errors import NotFound
from gateway.state import postgres_reader, postgres_watched, sqlite_connections
from gateway.state.migrations import Execute
from gateway.state.policy import STEPS, STORE, PolicyRules, copy_directory, pretty

__all__ = ["STEPS", "STORE", "PostgresPolicyStore"]


_CHANNEL = "veilgate_policy"
_UNAVAILABLE = "the policy store cannot be read"


class PostgresPolicyStore(PolicyRules):
    """Versions and the state document in PostgreSQL; the stamp is the state's change count,
    kept in memory by every replica and renewed on each NOTIFY."""

    def __init__(self, dsn: str, *, schema: str, listen: bool = True) -> None:
        self._db = postgres_reader.Reader.migrated(dsn, schema, store=STORE, steps=STEPS, unavailable=_UNAVAILABLE)
        super().__init__(read=self._read_state, changing=self._changing_state, keep=self._keep, load=self.load)
        self._watched = postgres_watched.Watched(dsn, schema, channel=_CHANNEL, load=self._changes, listen=listen)

    def _changes(self) -> int:
        return int(self._db.rows("SELECT changes FROM policy_state WHERE id = 1")[0][0])

    def stamp(self) -> Stamp | None:
        return (self._watched.get(), 0)

    def _read_state(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(self._db.rows("SELECT state FROM policy_state WHERE id = 1")[0][0])
        return state

    @contextmanager
    def _changing_state(self) -> Iterator[dict[str, Any]]:
        with self._db.transaction() as db:
            (text,) = db.execute("SELECT state FROM policy_state WHERE id = 1 FOR UPDATE").fetchone()
            state: dict[str, Any] = json.loads(text)
            yield state
            db.execute(
                "UPDATE policy_state SET state = ?, changes = changes + 1 WHERE id = 1",
                (json.dumps(state, ensure_ascii=False),),
            )
            db.execute(f"NOTIFY {_CHANNEL}")  # a fixed name, not input
        self._watched.renew()

    def import_from(self, source: Path) -> int | None:
        """Copy an installation's policy here (its `policy.sqlite3`, or the directory of files it
        was kept in before): every version, the state with its history, if this store never
        changed (else None); returns the versions copied."""
        with self._db.transaction() as db:
            db.execute("SELECT changes FROM policy_state WHERE id = 1 FOR UPDATE")
            copied = copy_directory(db.execute, source) if source.is_dir() else _copy_database(db.execute, source)
            db.execute(f"NOTIFY {_CHANNEL}")  # a fixed name, not input
        self._watched.renew()
        return copied

    def load(self, version: str) -> PolicyBundle:
        rows = self._db.rows("SELECT bundle FROM policy_versions WHERE version = ?", (version,))
        if not rows:
            raise NotFound(f"no stored policy version {version}")
        return PolicyBundle.model_validate_json(rows[0][0])

    def _keep(self, bundle: PolicyBundle) -> str:
        self._db.write(
            "INSERT INTO policy_versions VALUES (?, ?) ON CONFLICT DO NOTHING", (bundle.version, pretty(bundle))
        )
        return bundle.version

    def close(self) -> None:
        self._watched.close()
        self._db.close()


def _copy_database(execute: Execute, source: Path) -> int | None:
    """Copy the versions and state of an installation's SQLite policy file into a store that
    never changed."""
    (changes,) = execute("SELECT changes FROM policy_state WHERE id = 1").fetchone()
    if not source.is_file() or changes or execute("SELECT 1 FROM policy_versions LIMIT 1").fetchall():
        return None
    with contextlib.closing(sqlite_connections.open_read_only(source)) as local:
        versions = local.execute("SELECT version, bundle FROM policy_versions").fetchall()
        (state,) = local.execute("SELECT state FROM policy_state WHERE id = 1").fetchone()
    for row in versions:
        execute("INSERT INTO policy_versions VALUES (?, ?)", row)
    execute("UPDATE policy_state SET state = ?, changes = changes + 1 WHERE id = 1", (state,))
    return len(versions)
