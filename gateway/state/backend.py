"""The one place that picks each store's backend from the settings: PostgreSQL when
`database_dsn` is set (replicas on several machines), else SQLite files under `state_dir`."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from gateway.state.accounts_postgres import PostgresAccountStore
from gateway.state.accounts_sqlite import SqliteAccountStore
from gateway.state.audit_postgres import PostgresAuditLog
from gateway.state.audit_sqlite import SqliteAuditLog
from gateway.state.budget_postgres import PostgresBudgetLedger
from gateway.state.budget_sqlite import SqliteBudgetLedger
from gateway.state.freezes_postgres import PostgresFreezeStore
from gateway.state.freezes_sqlite import SqliteFreezeStore
from gateway.state.jobs_postgres import PostgresJobStore
from gateway.state.jobs_sqlite import SqliteJobStore
from gateway.state.ledger_postgres import PostgresLedger
from gateway.state.ledger_sqlite import SqliteLedger
from gateway.state.objections_postgres import PostgresObjectionStore
from gateway.state.objections_sqlite import SqliteObjectionStore
from gateway.state.policy_postgres import PostgresPolicyStore
from gateway.state.policy_sqlite import SqlitePolicyStore
from gateway.state.ports import (
    AccountStore,
    AuditLogStore,
    BudgetStore,
    FreezeStore,
    JobStore,
    LedgerStore,
    ObjectionStore,
    PolicyStore,
    ReleaseStore,
    SessionStore,
)
from gateway.state.releases import PostgresReleases, SequentialReleases
from gateway.state.sessions_postgres import PostgresSessionStore
from gateway.state.sessions_sqlite import SqliteSessionStore


class Where(Protocol):
    """What of the settings says where state lives (`gateway.settings.Settings` has it)."""

    @property
    def state_dir(self) -> Path: ...

    @property
    def database_dsn(self) -> str | None: ...

    @property
    def database_schema(self) -> str: ...

    @property
    def state_recheck_seconds(self) -> float: ...

    @property
    def freezes_file(self) -> Path: ...

    @property
    def policy_store_dir(self) -> Path: ...


def accounts_file(where: Where) -> Path:
    return where.state_dir / "accounts.sqlite3"


def legacy_clients_file(where: Where) -> Path:
    """Where accounts were kept before this store: imported once, then kept as a backup."""
    return where.state_dir / "clients.json"


def open_accounts(where: Where, *, listen: bool = True) -> AccountStore:
    """`listen=False`: no copy kept in memory on PostgreSQL, and SQLite's asked on every read
    (a command that reads once)."""
    legacy = legacy_clients_file(where)
    if where.database_dsn:  # the first replica brings the accounts of the machine it was set up on
        local = accounts_file(where) if accounts_file(where).is_file() else legacy
        return PostgresAccountStore(where.database_dsn, schema=where.database_schema, listen=listen, import_from=local)
    recheck = where.state_recheck_seconds if listen else 0.0  # a command reads once
    return SqliteAccountStore(accounts_file(where), import_from=legacy, recheck_seconds=recheck)


def ledger_dir(where: Where) -> Path:
    return where.state_dir / "ledger"


def open_ledger(where: Where) -> LedgerStore:
    """The verification ledger: PostgreSQL when a DSN is set, else `state/ledger/ledger.sqlite3`."""
    if where.database_dsn:
        return PostgresLedger(where.database_dsn, schema=where.database_schema)
    return SqliteLedger.open(ledger_dir(where))


def budget_file(where: Where) -> Path:
    return ledger_dir(where) / "budget.sqlite3"


def open_budget(where: Where) -> BudgetStore:
    """The privacy-budget ledger: PostgreSQL when a DSN is set, else `state/ledger/budget.sqlite3`."""
    if where.database_dsn:
        return PostgresBudgetLedger(where.database_dsn, schema=where.database_schema)
    return SqliteBudgetLedger(budget_file(where))


def open_log(directory: Path, *, dsn: str | None = None, schema: str = "veilgate") -> AuditLogStore:
    """The audit log: in PostgreSQL when `dsn` is set (its subject secret still a file under
    `directory`), else the SQLite file under `directory`."""
    if dsn:
        return PostgresAuditLog(dsn, schema=schema, key_directory=directory)
    return SqliteAuditLog.open(directory)


def open_releases(where: Where, ledger: LedgerStore, audit: AuditLogStore) -> ReleaseStore:
    """A release's admission and leaf: one transaction on PostgreSQL, one after the other on SQLite."""
    if where.database_dsn and isinstance(ledger, PostgresLedger):
        return PostgresReleases(where.database_dsn, where.database_schema, ledger, audit)
    return SequentialReleases(ledger, audit)


def local_log_has_leaves(directory: Path) -> bool:
    """Whether the SQLite audit log under `directory` exists and holds leaves (an installation
    about to move to PostgreSQL, whose log must be imported before anything is appended)."""
    if not (directory / "log.sqlite3").exists():
        return False
    local = SqliteAuditLog.open(directory)
    try:
        return local.size() > 0
    finally:
        local.close()


def jobs_file(where: Where) -> Path:
    return where.state_dir / "jobs" / "jobs.sqlite3"


def open_jobs(where: Where) -> JobStore:
    """The job store: PostgreSQL when a DSN is set, else `state/jobs/jobs.sqlite3`."""
    if where.database_dsn:
        return PostgresJobStore(where.database_dsn, schema=where.database_schema)
    return SqliteJobStore(jobs_file(where))


def freezes_database(where: Where) -> Path:
    return where.state_dir / "freezes.sqlite3"


def open_freezes(where: Where, *, listen: bool = True) -> FreezeStore:
    """The emergency stops: PostgreSQL when a DSN is set (changes arrive by notice), else
    `freezes.sqlite3` under `state_dir` (looked at again every `state_recheck_seconds`; an older
    `freezes.json` is imported on first open and kept as `freezes.json.imported`).
    `listen=False`, for a command: no copy kept in memory, every `active()` reads the stops."""
    if where.database_dsn:
        return PostgresFreezeStore(where.database_dsn, schema=where.database_schema, listen=listen)
    recheck = where.state_recheck_seconds if listen else 0.0
    return SqliteFreezeStore(freezes_database(where), import_from=where.freezes_file, recheck_seconds=recheck)


def objections_file(where: Where) -> Path:
    """Where objections were kept before SQLite: imported once, then kept as a backup."""
    return where.state_dir / "objections.json"


def objections_database(where: Where) -> Path:
    return where.state_dir / "objections.sqlite3"


def open_objections(where: Where) -> ObjectionStore:
    """The objections: PostgreSQL when a DSN is set, else `objections.sqlite3` under `state_dir`
    (an older `objections.json` imported on first open and kept as `objections.json.imported`)."""
    if where.database_dsn:
        return PostgresObjectionStore(where.database_dsn, schema=where.database_schema)
    return SqliteObjectionStore(objections_database(where), import_from=objections_file(where))


def policy_database(where: Where) -> Path:
    return where.policy_store_dir / "policy.sqlite3"


def open_policy_store(where: Where, *, listen: bool = True) -> PolicyStore:
    """The policy store: PostgreSQL when a DSN is set (changes arrive by notice), else
    `state/policy/policy.sqlite3` (looked at again every `state_recheck_seconds`; the files of
    earlier versions in `state/policy/` imported on first open). `listen=False`, for a command: no
    copy kept in memory, and the file asked on every read."""
    if where.database_dsn:
        return PostgresPolicyStore(where.database_dsn, schema=where.database_schema, listen=listen)
    recheck = where.state_recheck_seconds if listen else 0.0
    return SqlitePolicyStore(policy_database(where), import_from=where.policy_store_dir, recheck_seconds=recheck)


def sessions_file(where: Where) -> Path:
    return where.state_dir / "sessions.sqlite3"


def open_sessions(where: Where) -> SessionStore:
    """The ended console sessions: PostgreSQL when a DSN is set, else `sessions.sqlite3` under
    `state_dir`. Read on every console request, never on the API's."""
    if where.database_dsn:
        return PostgresSessionStore(where.database_dsn, schema=where.database_schema)
    return SqliteSessionStore(sessions_file(where))
