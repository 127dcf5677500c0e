"""Accounts in PostgreSQL, for replicas on several machines.

A change is one transaction under the store's advisory lock, so the changes of every replica
take turns; it NOTIFYs the others. Every replica keeps the accounts in memory (`Watched`),
renewed on each notice: a token is checked on every request at no database cost.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

from gateway.state import migrations, postgres_reader, postgres_watched, sqlite_connections
from gateway.state.accounts import STEPS, STORE, AccountRules, _account, import_file
from gateway.state.migrations import Execute
from gateway.state.ports import Account

log = logging.getLogger("veilgate.accounts")
_CHANNEL = "veilgate_clients"
_UNAVAILABLE = "the client accounts cannot be read"
_LOCK = "SELECT pg_advisory_xact_lock(hashtext('veilgate_clients'))"  # a fixed name, not input


class PostgresAccountStore(AccountRules):
    def __init__(self, dsn: str, *, schema: str, listen: bool = True, import_from: Path | None = None) -> None:
        """`import_from`: an installation's SQLite accounts file (or its older `clients.json`),
        copied in if the table is empty: the first replica of an installation on one machine."""
        self._db = postgres_reader.Reader.shared(dsn, schema, unavailable=_UNAVAILABLE)
        try:
            with self.writing() as execute:
                execute(migrations.POSTGRES_LOCK)
                migrations.migrate(execute, STORE, STEPS)
                copied = _copy(execute, import_from) if import_from is not None else None
        except BaseException:
            self._db.close()
            raise
        if copied:
            log.warning("client accounts: %d copied from %s into PostgreSQL", copied, import_from)
        self._watched = postgres_watched.Watched(dsn, schema, channel=_CHANNEL, load=self._load, listen=listen)

    @contextlib.contextmanager
    def writing(self) -> Iterator[Execute]:
        with self._db.transaction() as db:
            db.execute(_LOCK)
            yield db.execute
            db.execute(f"NOTIFY {_CHANNEL}")  # a fixed name, not input

    def _changed(self) -> None:
        self._watched.renew()

    def _load(self) -> dict[str, Account]:
        rows = self._db.rows("SELECT client_id, record FROM clients")
        return {key: _account(json.loads(text)) for key, text in rows}

    def _accounts(self) -> dict[str, Account]:
        return self._watched.get()

    def _proposal_rows(self) -> list[str]:
        return [text for (text,) in self._db.rows("SELECT record FROM account_proposals ORDER BY id")]

    def import_from(self, source: Path) -> int | None:
        """`veilgate database import`: copy the accounts and open proposals of an installation's
        SQLite file (or its older `clients.json`) here, if none are here yet (else None)."""
        with self.writing() as execute:
            copied = _copy(execute, source)
        self._watched.renew()
        return copied

    def close(self) -> None:
        self._watched.close()
        self._db.close()


def _copy(execute: Execute, source: Path) -> int | None:
    """Copy accounts from `source` into empty tables (None if they are not empty or it is missing)."""
    if source.suffix == ".json":
        return import_file(execute, source)
    if not source.is_file() or execute("SELECT 1 FROM clients LIMIT 1").fetchall():
        return None
    with contextlib.closing(sqlite_connections.open_read_only(source)) as local:
        accounts = local.execute("SELECT client_id, record FROM clients").fetchall()
        proposals = local.execute("SELECT id, record FROM account_proposals").fetchall()
    for row in accounts:
        execute("INSERT INTO clients VALUES (?, ?)", row)
    for row in proposals:
        execute("INSERT INTO account_proposals VALUES (?, ?)", row)
    return len(accounts)
