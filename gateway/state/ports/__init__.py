"""What the services may ask of each store, whatever the backend (`typing.Protocol`), and the
values the stores take and return: one module per store, all named here."""

from gateway.state.ports.accounts import PRIVILEGED, Account, AccountAction, AccountChange, AccountStore
from gateway.state.ports.audit import AuditLogStore, LeafFilter, StoredLeaf
from gateway.state.ports.budget import (
    Balance,
    BudgetStore,
    Holding,
    IdempotentReplay,
    SpendingRow,
    StaleEntry,
    StaleReservation,
)
from gateway.state.ports.freezes import Freezes, FreezeStore, LiftApproval, Unfrozen
from gateway.state.ports.jobs import AWAITING_CHECK, Job, JobStore
from gateway.state.ports.ledger import (
    Admission,
    BillingRow,
    ClaimUse,
    LedgerStore,
    VerificationRequest,
    Window,
)
from gateway.state.ports.objections import NEXT, ObjectionStore, Status
from gateway.state.ports.policy import Change, Decision, PolicyStore
from gateway.state.ports.releases import ReleaseStore
from gateway.state.ports.sessions import SessionStore

__all__ = [
    "AWAITING_CHECK",
    "NEXT",
    "PRIVILEGED",
    "Account",
    "AccountAction",
    "AccountChange",
    "AccountStore",
    "Admission",
    "AuditLogStore",
    "Balance",
    "BillingRow",
    "BudgetStore",
    "Change",
    "ClaimUse",
    "Decision",
    "FreezeStore",
    "Freezes",
    "Holding",
    "IdempotentReplay",
    "Job",
    "JobStore",
    "LeafFilter",
    "LedgerStore",
    "LiftApproval",
    "ObjectionStore",
    "PolicyStore",
    "ReleaseStore",
    "SessionStore",
    "SpendingRow",
    "StaleEntry",
    "StaleReservation",
    "Status",
    "StoredLeaf",
    "Unfrozen",
    "VerificationRequest",
    "Window",
]
