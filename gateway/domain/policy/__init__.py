"""The policy bundle: who may use which service, on which data, for what, until when.

Pure types and pure rules, in three parts: `schema` (the bundle as YAML gives it), `checks`
(names defined, the catalogue respected) and `authorize` (the grant that serves a request, the
stops that override it). Import from here; the parts are how the package is kept readable.
"""

from gateway.domain.names import Name
from gateway.domain.policy.authorize import (
    LIFT_REQUEST_LIFETIME,
    Freeze,
    FreezeKind,
    LiftRequest,
    authorize,
    check_not_frozen,
)
from gateway.domain.policy.checks import check_against_catalog, check_references
from gateway.domain.policy.schema import (
    Budget,
    CheckKind,
    Consumer,
    FieldCheck,
    Grant,
    GrantMode,
    NegativeList,
    Organisation,
    PolicyBundle,
    PolicyIssue,
    PriceClass,
    Purpose,
    PurposeKind,
    Quotas,
    UnknownKey,
    VerificationService,
)

__all__ = [
    "LIFT_REQUEST_LIFETIME",
    "Budget",
    "CheckKind",
    "Consumer",
    "FieldCheck",
    "Freeze",
    "FreezeKind",
    "Grant",
    "GrantMode",
    "LiftRequest",
    "Name",
    "NegativeList",
    "Organisation",
    "PolicyBundle",
    "PolicyIssue",
    "PriceClass",
    "Purpose",
    "PurposeKind",
    "Quotas",
    "UnknownKey",
    "VerificationService",
    "authorize",
    "check_against_catalog",
    "check_not_frozen",
    "check_references",
]
