"""The policy bundle's schema: who may use which service, on which data, for what, until when.

Pure types, validated where YAML enters (`extra="forbid"`, frozen). The bundle is the
allowlist: what it does not name is refused. Its rules that need more than one field live in
`checks` (names defined, the catalogue respected), its use at request time in `authorize`.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.domain.aggregate import AggregateTemplate
from gateway.domain.budget import Accounts, Amount, accounts, cap
from gateway.domain.canonical_json import canonical
from gateway.domain.catalog import Identifier
from gateway.domain.jobs import JobService
from gateway.domain.limits import VerificationLimits
from gateway.domain.models import Model, Scorer
from gateway.domain.names import Name
from gateway.domain.principal import Principal

__all__ = [
    "Budget",
    "CheckKind",
    "Consumer",
    "FieldCheck",
    "Grant",
    "GrantMode",
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
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CheckKind(StrEnum):
    EQUALS = "equals"
    """The caller supplies a value; it matches when it equals the record's, after normalising."""
    FIXED = "fixed"
    """A condition the policy fixes (status is active); the caller only asks whether it holds."""
    AT_LEAST = "at_least"
    """The caller picks a threshold from the allowed list; it matches when the value reaches it."""
    AT_MOST = "at_most"


class FieldCheck(_Frozen):
    column: Identifier
    check: CheckKind
    value: str | int | bool | None = None
    thresholds: tuple[int, ...] = ()
    description: str = ""

    @model_validator(mode="after")
    def _shape(self) -> FieldCheck:
        threshold_kinds = (CheckKind.AT_LEAST, CheckKind.AT_MOST)
        if (self.check is CheckKind.FIXED) != (self.value is not None):
            raise ValueError("`value` is required for a fixed check and allowed for no other")
        if self.check in threshold_kinds:
            if not 1 <= len(self.thresholds) <= 8 or list(self.thresholds) != sorted(set(self.thresholds)):
                raise ValueError("`thresholds`: 1 to 8 distinct values in increasing order")
        elif self.thresholds:
            raise ValueError("`thresholds` are only for at_least and at_most checks")
        # A claim's checks are keyed by their canonical JSON (RFC 8785), which holds integers
        # only up to 2**53: a policy may not name one it could not key.
        numbers = [*self.thresholds, *([self.value] if type(self.value) is int else [])]
        if any(abs(n) >= 2**53 for n in numbers):
            raise ValueError("`thresholds` and `value`: integers below 2**53 in magnitude")
        return self


class UnknownKey(StrEnum):
    NO_MATCH = "no_match"
    """An unknown key answers exactly like a record that does not match (the default)."""
    NOT_FOUND = "not_found"
    """An unknown key answers `not_found`: this tells the caller that no record exists."""


class VerificationService(_Frozen):
    title: str = Field(min_length=1)
    description: str = ""
    dataset: Identifier
    keys: tuple[Identifier, ...] = Field(min_length=1, max_length=3)
    """Key columns the caller supplies in full: exact match only."""
    fields: dict[Name, FieldCheck] = Field(min_length=1, max_length=16)
    latest_by: Identifier | None = None
    """When a key has several rows (one per year, say), the checks apply to the row with the
    largest value of this column."""
    unknown_key: UnknownKey = UnknownKey.NO_MATCH
    consent_required: bool = False
    """Each claim must carry `consent_ref`, the reference of the person's authorization."""
    max_batch: int = Field(20, ge=1, le=1000)
    limits: VerificationLimits = Field(default_factory=VerificationLimits)
    bill_unknown_keys: Literal[True] | None = None
    """Obsolete: every claim asked is billed, known key or not (a bill that counted only known
    keys would tell a consumer which keys exist). Only `true` is accepted, for older bundles."""
    price_class: Name | None = None


class GrantMode(StrEnum):
    WHOLE = "whole"
    DOMAIN = "domain"
    SCENARIO = "scenario"


class Quotas(_Frozen):
    daily_claims: int = Field(10_000, ge=1)
    """Verification claims (or scoring requests) counted per grant and UTC day."""


class Budget(_Frozen):
    epsilon: Decimal = Field(Decimal(0), ge=0)
    delta: Decimal = Field(Decimal(0), ge=0, le=1)


class Grant(_Frozen):
    consumer: Name
    mode: GrantMode
    services: tuple[Name, ...] = Field(min_length=1)
    purposes: tuple[Name, ...] = Field(min_length=1)
    scenario: str = Field(min_length=1)
    not_before: datetime
    expires: datetime
    budget: Budget = Field(default_factory=Budget)
    quotas: Quotas = Field(default_factory=Quotas)
    price_class: Name

    @model_validator(mode="after")
    def _term(self) -> Grant:
        if self.not_before.tzinfo is None or self.expires.tzinfo is None:
            raise ValueError("`not_before` and `expires` need a time zone, e.g. 2026-01-01T00:00:00Z")
        if self.expires <= self.not_before:
            raise ValueError("`expires` must be after `not_before`")
        return self


class PurposeKind(StrEnum):
    PUBLIC_GOVERNANCE = "public_governance"
    PUBLIC_WELFARE = "public_welfare"
    COMMERCIAL = "commercial"


class Purpose(_Frozen):
    title: str = Field(min_length=1)
    kind: PurposeKind


class PriceClass(_Frozen):
    title: str = Field(min_length=1)
    unit: Literal["call", "epsilon"]
    price_yuan: Decimal = Field(ge=0)
    cap_yuan: Decimal = Field(ge=0)
    """The ceiling set by the price authority; the actual price may not exceed it."""

    @model_validator(mode="after")
    def _under_cap(self) -> PriceClass:
        if self.price_yuan > self.cap_yuan:
            raise ValueError("`price_yuan` exceeds `cap_yuan`, the price authority's ceiling")
        return self


class Organisation(_Frozen):
    name: str = Field(min_length=1)
    budget: Budget | None = None
    """Privacy budget of all the organisation's consumers together, per dataset."""


class Consumer(_Frozen):
    organisation: Name


class NegativeList(_Frozen):
    datasets: tuple[Identifier, ...] = ()
    columns: tuple[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")], ...] = ()
    """`dataset.column` pairs that no service may read."""


class PolicyBundle(_Frozen):
    organisations: dict[Name, Organisation] = {}
    consumers: dict[Name, Consumer] = {}
    purposes: dict[Name, Purpose] = {}
    price_classes: dict[Name, PriceClass] = {}
    verification_services: dict[Name, VerificationService] = {}
    aggregate_templates: dict[Name, AggregateTemplate] = {}
    models: dict[Name, Model] = {}
    job_services: dict[Name, JobService] = {}
    """Approved analysis code: which datasets a job may read and how its outputs are checked."""
    """Scorecards run in the domain, and DP model fitting templates."""
    dataset_budgets: dict[Identifier, Budget] = {}
    """Global privacy budget per dataset version: what one person can lose to all consumers together."""
    grants: dict[Name, Grant] = {}
    negative_list: NegativeList = Field(default_factory=NegativeList)

    @property
    def version(self) -> str:
        """Content hash: equal bundles have equal versions, whatever their file layout.

        Not cached on the model: `model_copy` would carry a cached value into a changed copy.
        The bundle in force carries its version in `PolicyState`, computed once per swap.
        """
        return hashlib.sha256(canonical(self.model_dump(mode="json"))).hexdigest()[:32]

    def service_names(self) -> set[str]:
        return (
            set(self.verification_services) | set(self.aggregate_templates) | set(self.models) | set(self.job_services)
        )

    def budget_accounts(
        self, *, grant_id: str, consumer: str, organisation: str, dataset: str, version: str
    ) -> Accounts:
        """The three accounts a charge draws on, with their caps from this bundle (a level
        without a budget has a cap of zero: deny by default)."""
        grant = self.grants[grant_id].budget
        org = self.organisations.get(organisation)
        org_budget = org.budget if org is not None else None
        dataset_budget = self.dataset_budgets.get(dataset)
        return accounts(
            grant=grant_id,
            consumer=consumer,
            organisation=organisation,
            dataset=dataset,
            version=version,
            grant_cap=cap(grant.epsilon, grant.delta),
            organisation_cap=cap(org_budget.epsilon, org_budget.delta) if org_budget else Amount(0, 0),
            dataset_version_cap=cap(dataset_budget.epsilon, dataset_budget.delta) if dataset_budget else Amount(0, 0),
        )

    def organisation_of(self, principal: Principal) -> str:
        """The organisation a consumer acts for: the bundle's word, else the account's."""
        member = self.consumers.get(principal.client_id)
        return member.organisation if member is not None else principal.organisation

    def datasets_of(self, service: str) -> tuple[str, ...]:
        """Every dataset a service reads (a scorecard's features, a job service's datasets)."""
        if service in self.job_services:
            return self.job_services[service].datasets
        model = self.models.get(service)
        if isinstance(model, Scorer):
            return tuple(sorted({f.dataset for f in model.features.values()}))
        found = self.dataset_of(service)
        return (found,) if found is not None else ()

    def title_of(self, service: str) -> str:
        for section in (self.verification_services, self.aggregate_templates, self.models, self.job_services):
            if service in section:
                return section[service].title
        return service

    def spends_budget(self, service: str) -> bool:
        """Aggregate templates and model fits draw on privacy budgets; the rest do not."""
        model = self.models.get(service)
        job = self.job_services.get(service)
        return (
            service in self.aggregate_templates
            or (model is not None and not isinstance(model, Scorer))
            or (job is not None and job.output_check == "dp")
        )

    def dataset_of(self, service: str) -> str | None:
        if service in self.verification_services:
            return self.verification_services[service].dataset
        if service in self.aggregate_templates:
            return self.aggregate_templates[service].dataset
        if service in self.job_services:
            return self.job_services[service].datasets[0]
        model = self.models.get(service)
        if isinstance(model, Scorer):
            return model.entity_dataset
        return model.dataset if model is not None else None


class PolicyIssue(_Frozen):
    """One thing wrong with a bundle; `path` locates it (section, name, field...)."""

    path: tuple[str | int, ...]
    message: str

    def __str__(self) -> str:
        return f"{'.'.join(str(p) for p in self.path)}: {self.message}"
