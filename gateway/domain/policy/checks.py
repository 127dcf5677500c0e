"""The bundle's checks beyond its schema: every name it uses is defined (`check_references`),
and what it serves respects the catalogue (`check_against_catalog`): columns exist and have the
right types, thresholds lie inside bounds, core data is never used and important data only
through DP, the negative list is respected. Pure: the same checks run in `veilgate policy
check`, in CI and before a bundle is put in force.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.domain.aggregate import Measure, check_template
from gateway.domain.catalog import NUMERIC_TYPES, CatalogEntry, ColumnType, Level
from gateway.domain.models import Scorer, check_model
from gateway.domain.policy.schema import CheckKind, PolicyBundle, PolicyIssue

__all__ = ["check_against_catalog", "check_references"]


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
        if job.reviewers < 2:  # SECURITY: a run reads the data; one administrator never approves it alone
            issues.append(
                PolicyIssue(
                    path=("job_services", name, "reviewers"),
                    message="a job service needs 2: nobody approves a job alone",
                )
            )
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
            elif key in columns and columns[key].type is not ColumnType.STRING:
                # SECURITY: a caller's key is text: compared with numbers it never matched, and
                # DuckDB's refusal to convert it quoted the key into the server's log.
                issue(("keys", i), f"{key} is {columns[key].type.value}: a lookup key of a service is text")
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
                elif column.bounds is not None and column.bounds[0 if check.check is CheckKind.AT_LEAST else 1] in (
                    check.thresholds
                ):
                    # SECURITY: every record holds at least the lower bound (at most the upper):
                    # such a check is true of every record, so it would only tell that one exists.
                    edge = "lower" if check.check is CheckKind.AT_LEAST else "upper"
                    every = f"a threshold at the {edge} bound of {check.column} is true of every record"
                    issue((*path, "thresholds"), every)
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
            reads = [(f.dataset, c) for f in model.features.values() for c in (f.column, f.key, f.order_by) if c]
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
