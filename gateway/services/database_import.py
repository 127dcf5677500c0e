"""Moving an installation's history from its files into PostgreSQL, for replicas on several machines.

Each store copies its own files (`import_from`) in one transaction, and only into a store that
holds nothing yet: run twice, nothing is copied twice; run again after a failure, it copies what
is still missing. The audit log is copied byte for byte, so the tree, the checkpoints and every
receipt's leaf stay what they were. Run it before any gateway starts on PostgreSQL; a gateway
started first refuses while the history is only in the files (`runtime`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gateway.errors import ConfigurationError
from gateway.settings import Settings
from gateway.state.accounts_postgres import PostgresAccountStore
from gateway.state.audit_postgres import PostgresAuditLog
from gateway.state.backend import (
    accounts_file,
    budget_file,
    freezes_database,
    jobs_file,
    objections_database,
    objections_file,
    policy_database,
    sessions_file,
)
from gateway.state.budget_postgres import PostgresBudgetLedger
from gateway.state.freezes_postgres import PostgresFreezeStore
from gateway.state.jobs_postgres import PostgresJobStore
from gateway.state.ledger_postgres import PostgresLedger
from gateway.state.objections_postgres import PostgresObjectionStore
from gateway.state.policy_postgres import PostgresPolicyStore
from gateway.state.sessions_postgres import PostgresSessionStore


@dataclass(frozen=True, slots=True)
class Imported:
    store: str
    copied: int | None
    """Rows (or items) copied; None: the store already held data, and nothing was copied."""


class _Importer(Protocol):
    def import_from(self, source: Path, /) -> int | None: ...

    def close(self) -> None: ...


def import_installation(settings: Settings) -> list[Imported]:
    """Policy, client accounts, budgets, the verification ledger, the audit log, freezes, jobs,
    objections and ended console sessions, in that order: each from its file, where it exists."""
    if not settings.database_dsn:
        raise ConfigurationError("set database_dsn in the configuration: it names where the history goes")
    dsn, schema, state = settings.database_dsn, settings.database_schema, settings.state_dir
    policy = policy_database(settings) if policy_database(settings).exists() else settings.policy_store_dir
    stops = freezes_database(settings) if freezes_database(settings).exists() else settings.freezes_file
    objections = objections_database(settings) if objections_database(settings).exists() else objections_file(settings)
    steps: list[tuple[str, Path, Path, Callable[[], _Importer]]] = [
        # (what, the file that says there is something, what is copied, the store it goes to)
        ("policy", policy if policy.is_file() else policy / "state.json", policy,
         lambda: PostgresPolicyStore(dsn, schema=schema, listen=False)),
        ("client accounts", accounts_file(settings), accounts_file(settings),
         lambda: PostgresAccountStore(dsn, schema=schema, listen=False)),
        ("privacy budgets", budget_file(settings), budget_file(settings),
         lambda: PostgresBudgetLedger(dsn, schema=schema)),
        ("verification ledger", state / "ledger" / "ledger.sqlite3", state / "ledger" / "ledger.sqlite3",
         lambda: PostgresLedger(dsn, schema=schema)),
        ("audit log", settings.audit_dir / "log.sqlite3", settings.audit_dir,
         lambda: PostgresAuditLog(dsn, schema=schema, key_directory=settings.audit_dir)),
        ("freezes", stops, stops,
         lambda: PostgresFreezeStore(dsn, schema=schema, listen=False)),
        ("jobs", jobs_file(settings), jobs_file(settings),
         lambda: PostgresJobStore(dsn, schema=schema)),
        ("objections", objections, objections,
         lambda: PostgresObjectionStore(dsn, schema=schema)),
        ("ended console sessions", sessions_file(settings), sessions_file(settings),
         lambda: PostgresSessionStore(dsn, schema=schema)),
    ]  # fmt: skip
    done: list[Imported] = []
    for what, marker, source, open_store in steps:
        if not marker.exists():
            continue
        store = open_store()
        try:
            done.append(Imported(what, store.import_from(source)))
        finally:
            store.close()
    return done
