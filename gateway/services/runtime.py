"""The leaves one gateway process holds, built once from the settings."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Protocol, TypeVar

from gateway.catalog import CatalogStore
from gateway.engine import Domain
from gateway.errors import ConfigurationError
from gateway.onnx_models import OnnxModels
from gateway.policy import PolicyHolder
from gateway.services import policy_check
from gateway.settings import Settings
from gateway.signing import KeyRing
from gateway.state.backend import (
    budget_file,
    freezes_database,
    local_log_has_leaves,
    open_accounts,
    open_budget,
    open_freezes,
    open_jobs,
    open_ledger,
    open_log,
    open_objections,
    open_policy_store,
    open_releases,
    open_sessions,
)
from gateway.state.budget_sqlite import SqliteBudgetLedger
from gateway.state.freezes_sqlite import installation_stops
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


class _Closable(Protocol):
    def close(self) -> None: ...


Opened = TypeVar("Opened", bound=_Closable)


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: Settings
    catalog: CatalogStore
    domain: Domain
    clients: AccountStore
    token_keys: KeyRing
    receipt_keys: KeyRing
    audit: AuditLogStore
    ledger: LedgerStore
    budget: BudgetStore
    policy: PolicyHolder
    policy_store: PolicyStore
    freezes: FreezeStore
    objections: ObjectionStore
    sessions: SessionStore
    """Console sessions that logged out: read by the console, never by the API."""
    jobs: JobStore
    onnx: OnnxModels
    releases: ReleaseStore
    """A verification's or score's admission and audit leaf, together (`state.releases`)."""

    @classmethod
    def open(cls, settings: Settings) -> Runtime:
        """Open every leaf; fails with an error that says what to fix (a bad policy bundle too).

        With `database_dsn`, the state replicas share lives in PostgreSQL; otherwise in SQLite
        files (and the catalogue's and key rings' files) under the state directory.
        """
        dsn, schema = settings.database_dsn, settings.database_schema
        recheck = settings.state_recheck_seconds  # files other processes change: looked at this often
        # A store opened before a later one fails is closed again: a start that fails (a bad
        # bundle, history left behind) leaves no connection, listener or writer thread behind.
        with contextlib.ExitStack() as opened:

            def kept(store: Opened) -> Opened:
                opened.callback(store.close)
                return store

            catalog = CatalogStore(settings.data_path, recheck_seconds=recheck)
            policy_store = kept(open_policy_store(settings))
            onnx = OnnxModels(settings.policy_dir)
            audit = kept(open_log(settings.audit_dir, dsn=dsn, schema=schema))
            ledger = kept(open_ledger(settings))
            budget = kept(open_budget(settings))
            freezes = kept(open_freezes(settings))
            if dsn:
                _refuse_to_leave_history_behind(settings, budget, audit, freezes)
            ledger.bind_pseudonyms(audit.pseudonym_key_id())
            runtime = cls(
                settings=settings,
                catalog=catalog,
                domain=Domain(
                    settings.data_path,
                    threads=settings.engine_threads,
                    index_max_rows=settings.lookup_index_max_rows,
                    spark_master=settings.spark_master,
                ),
                clients=kept(open_accounts(settings)),
                token_keys=KeyRing.load(settings.token_keys_dir, recheck_seconds=recheck),
                receipt_keys=KeyRing.load(settings.receipt_keys_dir, recheck_seconds=recheck),
                audit=audit,
                ledger=ledger,
                budget=budget,
                policy=policy_check.open_policy(
                    settings.policy_dir, policy_store, catalog, onnx, policy_approvals=settings.policy_approvals
                ),
                policy_store=policy_store,
                freezes=freezes,
                objections=kept(open_objections(settings)),
                sessions=kept(open_sessions(settings)),
                jobs=kept(open_jobs(settings)),
                onnx=onnx,
                releases=kept(open_releases(settings, ledger, audit)),
            )
            opened.pop_all()  # started: the runtime closes them now
        return runtime

    def close(self) -> None:
        self.releases.close()
        self.sessions.close()
        self.objections.close()
        self.policy_store.close()
        self.clients.close()
        self.freezes.close()
        self.jobs.close()
        self.budget.close()
        self.ledger.close()
        self.audit.close()
        self.domain.close()


def _refuse_to_leave_history_behind(
    settings: Settings, budget: BudgetStore, audit: AuditLogStore, freezes: FreezeStore
) -> None:
    """An installation switched to PostgreSQL whose history is still in its files would start
    again from zero: budgets already spent would be spent again, the audit trail would begin anew
    under receipts that name the old one, and emergency stops would be lifted. Moving it is not
    automated, so refuse."""
    local_stops = freezes_database(settings)
    if (local_stops.exists() or settings.freezes_file.exists()) and not freezes.active():
        stopped = installation_stops(local_stops, settings.freezes_file)
        if stopped:
            names = ", ".join(f"{kind.value} {name}" for kind, name in sorted(stopped))
            where = local_stops if local_stops.exists() else settings.freezes_file
            raise ConfigurationError(
                f"{where} stops {names}, and PostgreSQL stops nothing: starting on PostgreSQL "
                "would lift those stops. Make them again with `veilgate freeze` under this configuration first"
            )
    local_file = budget_file(settings)
    if local_file.exists() and not budget.has_history():
        local = SqliteBudgetLedger(local_file)
        try:
            if local.has_history():
                raise ConfigurationError(
                    f"privacy budgets were spent in {local_file}, and PostgreSQL has none: starting on "
                    "PostgreSQL would forget them. Set database_dsn on a new installation (see docs/operations.md)"
                )
        finally:
            local.close()
    if audit.size() == 0 and local_log_has_leaves(settings.audit_dir):
        raise ConfigurationError(
            f"the audit log in {settings.audit_dir / 'log.sqlite3'} has leaves, and PostgreSQL's has none: starting "
            "on PostgreSQL would begin the trail anew. Set database_dsn on a new installation (see docs/operations.md)"
        )
