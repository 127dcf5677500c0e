"""The leaves one gateway process holds, built once from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.audit import AuditLog, open_log
from gateway.budget_ledger import BudgetLedger, open_budget_ledger
from gateway.catalog import CatalogStore
from gateway.clients import ClientStore, open_clients
from gateway.engine import Domain
from gateway.freezes import FreezeStore, open_freezes
from gateway.jobs import JobStore, open_jobs
from gateway.ledger import Ledger, open_ledger
from gateway.objections import ObjectionStore, open_objections
from gateway.onnx_models import OnnxModels
from gateway.policy import PolicyHolder
from gateway.policy_store import PolicyStore, open_policy_store
from gateway.services import policy_check
from gateway.settings import Settings
from gateway.signing import KeyRing


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: Settings
    catalog: CatalogStore
    domain: Domain
    clients: ClientStore
    token_keys: KeyRing
    receipt_keys: KeyRing
    audit: AuditLog
    ledger: Ledger
    budget: BudgetLedger
    policy: PolicyHolder
    policy_store: PolicyStore
    freezes: FreezeStore
    objections: ObjectionStore
    jobs: JobStore
    onnx: OnnxModels

    @classmethod
    def open(cls, settings: Settings) -> Runtime:
        """Open every leaf; fails with an error that says what to fix (a bad policy bundle too).

        With `database_dsn`, the state replicas share lives in PostgreSQL; otherwise in SQLite
        files and JSON documents under the state directory.
        """
        dsn, schema = settings.database_dsn, settings.database_schema
        state = settings.state_dir
        catalog = CatalogStore(settings.data_path)
        policy_store = open_policy_store(settings.policy_store_dir, dsn=dsn, schema=schema)
        onnx = OnnxModels(settings.policy_dir)
        audit = open_log(settings.audit_dir, dsn=dsn, schema=schema)
        ledger = open_ledger(state / "ledger", dsn=dsn, schema=schema)
        try:
            ledger.bind_pseudonyms(audit.pseudonym_key_id())
        except BaseException:
            ledger.close()
            audit.close()
            raise
        return cls(
            settings=settings,
            catalog=catalog,
            domain=Domain(
                settings.data_path, threads=settings.engine_threads, index_max_rows=settings.lookup_index_max_rows
            ),
            clients=open_clients(settings.clients_file, dsn=dsn, schema=schema),
            token_keys=KeyRing.load(settings.token_keys_dir),
            receipt_keys=KeyRing.load(settings.receipt_keys_dir),
            audit=audit,
            ledger=ledger,
            budget=open_budget_ledger(state / "ledger" / "budget.sqlite3", dsn=dsn, schema=schema),
            policy=policy_check.open_policy(settings.policy_dir, policy_store, catalog, onnx),
            policy_store=policy_store,
            freezes=open_freezes(settings.freezes_file, dsn=dsn, schema=schema),
            objections=open_objections(state / "objections.json", dsn=dsn, schema=schema),
            jobs=open_jobs(state / "jobs" / "jobs.sqlite3", dsn=dsn, schema=schema),
            onnx=onnx,
        )

    def close(self) -> None:
        self.objections.close()
        self.policy_store.close()
        self.clients.close()
        self.freezes.close()
        self.jobs.close()
        self.budget.close()
        self.ledger.close()
        self.audit.close()
        self.domain.close()
