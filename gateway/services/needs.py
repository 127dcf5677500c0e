"""What a service may ask of the process: one small protocol per leaf, so that each service
declares, as the type of its first parameter, exactly the leaves it uses.

A service writes `class Needs(HasLedger, HasBudget, Protocol)` and takes `rt: Needs`: mypy
refuses any other leaf in its body, the runtime (`services.runtime.Runtime`, which holds every
leaf the process opened) satisfies every such protocol structurally, and a test builds the
service with only the two or three leaves it names (any object with those attributes).
Properties, not attributes: the runtime is frozen, and a service only reads them.
"""

from __future__ import annotations

from typing import Protocol

from gateway.catalog import CatalogStore
from gateway.engine import Domain
from gateway.onnx_models import OnnxModels
from gateway.policy import PolicyHolder
from gateway.settings import Settings
from gateway.signing import KeyRing
from gateway.state.ports import (
    AccountStore,
    AuditLogStore,
    BudgetStore,
    FreezeStore,
    JobStore,
    LedgerStore,
    ObjectionStore,
    PolicyStore,
)

__all__ = [
    "HasAudit",
    "HasBudget",
    "HasCatalog",
    "HasClients",
    "HasDomain",
    "HasFreezes",
    "HasJobs",
    "HasLedger",
    "HasObjections",
    "HasOnnx",
    "HasPolicy",
    "HasPolicyStore",
    "HasReceiptKeys",
    "HasSettings",
    "HasTokenKeys",
]


class HasSettings(Protocol):
    @property
    def settings(self) -> Settings: ...


class HasCatalog(Protocol):
    @property
    def catalog(self) -> CatalogStore: ...


class HasDomain(Protocol):
    @property
    def domain(self) -> Domain: ...


class HasClients(Protocol):
    @property
    def clients(self) -> AccountStore: ...


class HasTokenKeys(Protocol):
    @property
    def token_keys(self) -> KeyRing: ...


class HasReceiptKeys(Protocol):
    @property
    def receipt_keys(self) -> KeyRing: ...


class HasAudit(Protocol):
    @property
    def audit(self) -> AuditLogStore: ...


class HasLedger(Protocol):
    @property
    def ledger(self) -> LedgerStore: ...


class HasBudget(Protocol):
    @property
    def budget(self) -> BudgetStore: ...


class HasPolicy(Protocol):
    @property
    def policy(self) -> PolicyHolder: ...


class HasPolicyStore(Protocol):
    @property
    def policy_store(self) -> PolicyStore: ...


class HasFreezes(Protocol):
    @property
    def freezes(self) -> FreezeStore: ...


class HasObjections(Protocol):
    @property
    def objections(self) -> ObjectionStore: ...


class HasJobs(Protocol):
    @property
    def jobs(self) -> JobStore: ...


class HasOnnx(Protocol):
    @property
    def onnx(self) -> OnnxModels: ...
