"""Accounts in one SQLite file (`state/accounts.sqlite3`), for the processes of one machine.

A change is one BEGIN IMMEDIATE transaction (`sqlite_connections.immediate`): two workers, or the
command line and a server, take turns and never write over each other. Every request reads the
accounts from memory, re-read when `PRAGMA data_version` says another connection committed; that
is asked at most once per recheck interval (`state_recheck_seconds`), and at once after a change
made through this store.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from gateway.state import sqlite_connections
from gateway.state.accounts import STEPS, STORE, AccountRules, _account, import_file
from gateway.state.migrations import Execute
from gateway.state.ports import Account

log = logging.getLogger("veilgate.accounts")
_UNAVAILABLE = "the client accounts cannot be read"


class SqliteAccountStore(AccountRules):
    def __init__(self, path: Path, *, import_from: Path | None = None, recheck_seconds: float = 0.0) -> None:
        """`import_from`: a `clients.json` (the store before this one) whose accounts are copied
        in on first open; it is then renamed `clients.json.imported` and kept as a backup.
        `recheck_seconds`: how long the accounts may be read from memory before another
        process's commit is looked for (0: on every read)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)  # secret hashes: the owner's only (SQLite gives its WAL files the same mode)
        self._conn = sqlite_connections.open_wal(path)
        self._lock = threading.Lock()
        self._snapshot: sqlite_connections.Snapshot[dict[str, Account]] = sqlite_connections.Snapshot(recheck_seconds)
        copy = (lambda execute: import_file(execute, import_from)) if import_from is not None else None
        copied = sqlite_connections.migrate_and_import(self._conn, self._lock, _UNAVAILABLE, STORE, STEPS, copy=copy)
        if copied is not None and import_from is not None:
            sqlite_connections.keep_as_imported(import_from, copied, path, log, "client accounts")

    @contextlib.contextmanager
    def writing(self) -> Iterator[Execute]:
        with sqlite_connections.immediate(self._conn, self._lock, _UNAVAILABLE) as conn:
            yield conn.execute

    def _changed(self) -> None:
        with self._lock:
            self._snapshot.forget()  # data_version does not count this connection's own commits

    def _accounts(self) -> dict[str, Account]:
        return self._snapshot.read(self._conn, self._lock, _UNAVAILABLE, _read_accounts)

    def _proposal_rows(self) -> list[str]:
        with sqlite_connections.reading(self._conn, self._lock, _UNAVAILABLE) as conn:
            return [text for (text,) in conn.execute("SELECT record FROM account_proposals ORDER BY id").fetchall()]

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._conn.close()


def _read_accounts(conn: sqlite3.Connection) -> dict[str, Account]:
    return {key: _account(json.loads(text)) for key, text in conn.execute("SELECT client_id, record FROM clients")}
