"""The policy bundle: who may use which service, on which data, for what, until when.

Pure types and pure rules. The bundle is the allowlist: a request is served only when a grant
names exactly that consumer, service and purpose and its term contains the request's time
(deny by default). `authorize` is a function of (bundle, principal, request, clock), so it is
tested without a server. `check_against_catalog` holds the rules that need the catalogue:
columns exist and have the right types, thresholds lie inside bounds, core data is never used
and important data only through DP aggregates, the negative list is respected.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal

import rfc8785
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.domain.aggregate import AggregateTemplate, Measure, check_template
from gateway.domain.budget import Accounts, Amount, accounts, cap
from gateway.domain.catalog import NUMERIC_TYPES, CatalogEntry, ColumnType, Identifier, Level
from gateway.domain.jobs import JobService
from gateway.domain.limits import VerificationLimits
from gateway.domain.models import Model, Scorer, check_model
from gateway.domain.names import Name as Name  # noqa: PLC0414 - re-exported
from gateway.domain.principal import Principal
from gateway.errors import Frozen, NotFound, PolicyDenied


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
        canonical = rfc8785.dumps(self.model_dump(mode="json"))
        return hashlib.sha256(canonical).hexdigest()[:32]

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


def check_references(bundle: PolicyBundle) -> list[PolicyIssue]:
    """Every name a bundle uses is defined in it."""
    issues: list[PolicyIssue] = []
    for name, consumer in bundle.consumers.items():
        if consumer.organisation not in bundle.organisations:
            issues.append(PolicyIssue(path=("consumers", name, "organisation"), message="unknown organisation"))
    for name, service in bundle.verification_services.items():
        if service.price_class is not None and service.price_class not in bundle.price_classes:
            issues.append(
                PolicyIssue(path=("verification_services", name, "price_class"), message="unknown price class")
            )
    overlap = set(bundle.verification_services) & set(bundle.aggregate_templates)
    for name in sorted(overlap):
        issues.append(PolicyIssue(path=("aggregate_templates", name), message="a verification service has this name"))
    for name in sorted(set(bundle.models) & (set(bundle.verification_services) | set(bundle.aggregate_templates))):
        issues.append(PolicyIssue(path=("models", name), message="a service or template has this name"))
    others = set(bundle.verification_services) | set(bundle.aggregate_templates) | set(bundle.models)
    for name in sorted(set(bundle.job_services) & others):
        issues.append(PolicyIssue(path=("job_services", name), message="another service has this name"))
    for name, job in bundle.job_services.items():
        for dataset in job.datasets:
            if job.output_check == "dp" and dataset not in bundle.dataset_budgets:
                issues.append(
                    PolicyIssue(
                        path=("job_services", name, "datasets"), message=f"{dataset} has no dataset_budgets entry"
                    )
                )
    for name, model in bundle.models.items():
        if model.price_class is not None and model.price_class not in bundle.price_classes:
            issues.append(PolicyIssue(path=("models", name, "price_class"), message="unknown price class"))
        if not isinstance(model, Scorer) and model.dataset not in bundle.dataset_budgets:
            issues.append(
                PolicyIssue(
                    path=("models", name, "dataset"),
                    message=f"dataset {model.dataset} has no entry in dataset_budgets (its global privacy budget)",
                )
            )
    for name, template in bundle.aggregate_templates.items():
        if template.price_class is not None and template.price_class not in bundle.price_classes:
            issues.append(PolicyIssue(path=("aggregate_templates", name, "price_class"), message="unknown price class"))
        if template.dataset not in bundle.dataset_budgets:
            issues.append(
                PolicyIssue(
                    path=("aggregate_templates", name, "dataset"),
                    message=f"dataset {template.dataset} has no entry in dataset_budgets (its global privacy budget)",
                )
            )
    for name, grant in bundle.grants.items():
        where = ("grants", name)
        if grant.consumer not in bundle.consumers:
            issues.append(PolicyIssue(path=(*where, "consumer"), message=f"unknown consumer {grant.consumer}"))
        elif any(bundle.spends_budget(s) for s in grant.services):
            org_name = bundle.consumers[grant.consumer].organisation
            organisation = bundle.organisations.get(org_name)
            if organisation is not None and (organisation.budget is None or organisation.budget.epsilon <= 0):
                issues.append(
                    PolicyIssue(
                        path=(*where, "services"),
                        message=f"aggregates need a privacy budget for organisation {org_name}",
                    )
                )
            if grant.budget.epsilon <= 0:
                issues.append(PolicyIssue(path=(*where, "budget"), message="aggregates need a budget with epsilon > 0"))
        for i, service_name in enumerate(grant.services):
            if service_name not in bundle.service_names():
                issues.append(PolicyIssue(path=(*where, "services", i), message=f"unknown service {service_name}"))
        for i, purpose in enumerate(grant.purposes):
            if purpose not in bundle.purposes:
                issues.append(PolicyIssue(path=(*where, "purposes", i), message=f"unknown purpose {purpose}"))
        if grant.price_class not in bundle.price_classes:
            issues.append(PolicyIssue(path=(*where, "price_class"), message=f"unknown price class {grant.price_class}"))
    return issues


def check_against_catalog(bundle: PolicyBundle, entries: Mapping[str, CatalogEntry]) -> list[PolicyIssue]:
    """The rules that need the catalogue: columns, types, bounds, levels, the negative list."""
    issues: list[PolicyIssue] = []
    banned_columns = set(bundle.negative_list.columns)
    for name, service in bundle.verification_services.items():
        where: tuple[str | int, ...] = ("verification_services", name)

        def issue(path: tuple[str | int, ...], message: str) -> None:
            issues.append(PolicyIssue(path=(*where, *path), message=message))  # noqa: B023 - used at once

        entry = entries.get(service.dataset)
        if entry is None:
            issue(("dataset",), f"dataset {service.dataset} is not registered")
            continue
        if service.dataset in bundle.negative_list.datasets:
            issue(("dataset",), f"dataset {service.dataset} is on the negative list")
        if entry.level is Level.CORE:
            issue(("dataset",), "core data is never served")
        elif entry.level is Level.IMPORTANT:
            issue(("dataset",), "important data is served only through DP aggregates, not verification")
        columns = {c.name: c for c in entry.columns}
        used: list[tuple[tuple[str | int, ...], str]] = [(("keys", i), k) for i, k in enumerate(service.keys)]
        used += [(("fields", f, "column"), check.column) for f, check in service.fields.items()]
        if service.latest_by is not None:
            used.append((("latest_by",), service.latest_by))
        for used_at, used_column in used:
            if used_column not in columns:
                issue(used_at, f"{service.dataset} has no column {used_column}")
            elif f"{service.dataset}.{used_column}" in banned_columns:
                issue(used_at, f"{service.dataset}.{used_column} is on the negative list")
        for i, key in enumerate(service.keys):
            if key in columns and key not in entry.lookup_keys:
                issue(("keys", i), f"{key} is not a lookup key of {service.dataset}: it has no index")
        if service.latest_by is None and entry.privacy_unit.max_rows > 1:
            issue(("latest_by",), f"{service.dataset} has up to {entry.privacy_unit.max_rows} rows per key; say which")
        for field, check in service.fields.items():
            column = columns.get(check.column)
            if column is None:
                continue
            path: tuple[str | int, ...] = ("fields", field)
            if check.check in (CheckKind.AT_LEAST, CheckKind.AT_MOST):
                if column.type not in NUMERIC_TYPES:
                    issue(path, f"a threshold check needs a numeric column; {check.column} is {column.type.value}")
                elif column.bounds is not None and not all(
                    column.bounds[0] <= t <= column.bounds[1] for t in check.thresholds
                ):
                    issue((*path, "thresholds"), f"thresholds must lie inside the bounds of {check.column}")
            elif check.check is CheckKind.FIXED:
                if column.categories is not None and str(check.value) not in column.categories:
                    issue((*path, "value"), f"{check.value!r} is not a category of {check.column}")
                if column.type is ColumnType.BOOLEAN and not isinstance(check.value, bool):
                    issue((*path, "value"), f"{check.column} is boolean: the value must be true or false")
            elif check.check is CheckKind.EQUALS and column.type is not ColumnType.STRING:
                issue(path, f"an equality check compares text; {check.column} is {column.type.value}")
    for name, template in bundle.aggregate_templates.items():
        where = ("aggregate_templates", name)
        entry = entries.get(template.dataset)
        if entry is None:
            issues.append(
                PolicyIssue(path=(*where, "dataset"), message=f"dataset {template.dataset} is not registered")
            )
            continue
        if template.dataset in bundle.negative_list.datasets:
            issues.append(
                PolicyIssue(path=(*where, "dataset"), message=f"dataset {template.dataset} is on the negative list")
            )
        if entry.level is Level.CORE:
            issues.append(PolicyIssue(path=(*where, "dataset"), message="core data is never served"))
        used = [(("column",), template.column)] if template.column else []
        used += [(("filters", c), c) for c in template.filters]
        used += [(("group_by", i), c) for i, c in enumerate(template.group_by)]
        if template.measure is Measure.COUNT_UNITS:  # counting distinct units reads the unit column
            used.append((("measure",), entry.privacy_unit.column))
        for used_at, used_column in used:
            if f"{template.dataset}.{used_column}" in banned_columns:
                issues.append(
                    PolicyIssue(
                        path=(*where, *used_at),
                        message=f"{template.dataset}.{used_column} is on the negative list",
                    )
                )
        for path, message in check_template(template, entry):
            issues.append(PolicyIssue(path=(*where, *path), message=message))
    for name, job in bundle.job_services.items():
        for i, dataset in enumerate(job.datasets):
            at: tuple[str | int, ...] = ("job_services", name, "datasets", i)
            entry = entries.get(dataset)
            if entry is None:
                issues.append(PolicyIssue(path=at, message=f"dataset {dataset} is not registered"))
            elif dataset in bundle.negative_list.datasets:
                issues.append(PolicyIssue(path=at, message=f"dataset {dataset} is on the negative list"))
            elif entry.level is Level.CORE:
                issues.append(PolicyIssue(path=at, message="core data is never served"))
            elif entry.level is Level.IMPORTANT and job.output_check != "dp":
                issues.append(PolicyIssue(path=at, message=f"{dataset} is important data: job outputs only through DP"))
    for name, model in bundle.models.items():
        where = ("models", name)
        for path, message in check_model(model, entries):
            issues.append(PolicyIssue(path=(*where, *path), message=message))
        if isinstance(model, Scorer):
            reads = [(f.dataset, f.column) for f in model.features.values()] + [
                (f.dataset, f.key) for f in model.features.values()
            ]
        else:
            reads = [(model.dataset, c) for c in (*model.features, model.target)]
        for dataset, read in sorted(set(reads)):
            if f"{dataset}.{read}" in banned_columns:
                issues.append(PolicyIssue(path=where, message=f"{dataset}.{read} is on the negative list"))
        for dataset in sorted({d for d, _c in reads}):
            entry = entries.get(dataset)
            if entry is None:
                continue
            if dataset in bundle.negative_list.datasets:
                issues.append(PolicyIssue(path=where, message=f"dataset {dataset} is on the negative list"))
            if entry.level is Level.CORE:
                issues.append(PolicyIssue(path=where, message="core data is never served"))
            elif entry.level is Level.IMPORTANT and isinstance(model, Scorer):
                message = f"{dataset} is important data: only DP aggregates and fits"
                issues.append(PolicyIssue(path=where, message=message))
    return issues


class FreezeKind(StrEnum):
    CONSUMER = "consumer"
    ORGANISATION = "organisation"
    DATASET = "dataset"
    SERVICE = "service"


class Freeze(_Frozen):
    """An emergency stop: from `since`, nothing is served to or from what it names."""

    kind: FreezeKind
    name: str = Field(min_length=1, max_length=128)
    since: datetime
    by: str
    reason: str = Field(min_length=1, max_length=500)


def check_not_frozen(
    freezes: Mapping[tuple[FreezeKind, str], Freeze], *, consumer: str, organisation: str, service: str, dataset: str
) -> None:
    """Refuse if any of the four is frozen; the message names which, and why."""
    for kind, name in (
        (FreezeKind.CONSUMER, consumer),
        (FreezeKind.ORGANISATION, organisation),
        (FreezeKind.SERVICE, service),
        (FreezeKind.DATASET, dataset),
    ):
        found = freezes.get((kind, name))
        if found is not None:
            raise Frozen(f"use of {kind.value} {name!r} is stopped since {found.since.isoformat()}: {found.reason}")


def authorize(
    bundle: PolicyBundle, principal: Principal, service: str, purpose: str, now: datetime
) -> tuple[str, Grant]:
    """The grant that allows this consumer this service for this purpose now, or why not.

    Deny by default: the first reason that applies is the one given, and it names what the
    caller can act on (its own grants only, never another consumer's).
    """
    if service not in bundle.service_names():
        raise NotFound("service: no service of this name")
    mine = [(gid, g) for gid, g in bundle.grants.items() if g.consumer == principal.client_id and service in g.services]
    if not mine:
        raise PolicyDenied("service: no grant of yours covers this service")
    for_purpose = [(gid, g) for gid, g in mine if purpose in g.purposes]
    if not for_purpose:
        allowed = sorted({p for _gid, g in mine for p in g.purposes})
        raise PolicyDenied(f"purpose: not one your grant allows ({', '.join(allowed)})")
    current = [(gid, g) for gid, g in for_purpose if g.not_before <= now < g.expires]
    if not current:
        gid, grant = for_purpose[0]
        when = "is not valid before" if now < grant.not_before else "expired at"
        moment = grant.not_before if now < grant.not_before else grant.expires
        raise PolicyDenied(f"your grant {gid} {when} {moment.isoformat()}")
    return min(current, key=lambda item: item[0])
