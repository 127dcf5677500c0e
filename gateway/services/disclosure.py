"""Public disclosure: who is authorized to use which public data, for what, until when; the
products and services with their prices; and how much they are used.

Built from the bundle in force, the catalogue, the ledger's metering and the privacy budget spent
per service and dataset; no request, key or answer is ever part of it.
"""

from __future__ import annotations

from typing import Any, Protocol

from gateway.domain.policy import PolicyBundle
from gateway.services import metering, policy_admin
from gateway.services.metering import MeteringNeeds
from gateway.services.policy_admin import PolicyReader


class DisclosureNeeds(PolicyReader, MeteringNeeds, Protocol):
    """What public disclosure reads."""


Json = dict[str, Any]


def authorizations(rt: DisclosureNeeds) -> list[Json]:
    bundle = policy_admin.current(rt).bundle
    out = []
    for grant_id, grant in sorted(bundle.grants.items()):
        consumer = bundle.consumers.get(grant.consumer)
        organisation = bundle.organisations.get(consumer.organisation) if consumer else None
        services = [s for s in grant.services if s in bundle.service_names()]
        out.append(
            {
                "grant": grant_id,
                "consumer": grant.consumer,
                "organisation": organisation.name if organisation else None,
                "mode": grant.mode.value,
                "scenario": grant.scenario,
                "services": [{"name": s, "title": bundle.title_of(s)} for s in services],
                "datasets": sorted({d for s in services for d in bundle.datasets_of(s)}),
                "purposes": [
                    {"name": p, "title": bundle.purposes[p].title, "kind": bundle.purposes[p].kind.value}
                    for p in grant.purposes
                    if p in bundle.purposes
                ],
                "not_before": grant.not_before.isoformat(),
                "expires": grant.expires.isoformat(),
                "price_class": grant.price_class,
            }
        )
    return out


def _price(bundle: PolicyBundle, price_class: str | None) -> Json | None:
    price = bundle.price_classes.get(price_class) if price_class else None
    if price is None:
        return None
    return {
        "title": price.title,
        "unit": price.unit,
        "price_yuan": str(price.price_yuan),
        "cap_yuan": str(price.cap_yuan),
    }


def services(rt: DisclosureNeeds) -> list[Json]:
    bundle = policy_admin.current(rt)
    titles = {r.entry.dataset: r.entry.title for r in rt.catalog.records()}
    out: list[Json] = []
    for name, service in sorted(bundle.bundle.verification_services.items()):
        out.append(
            {
                "name": name,
                "kind": "verification",
                "title": service.title,
                "description": service.description,
                "dataset": service.dataset,
                "dataset_title": titles.get(service.dataset),
                "available": name not in bundle.unavailable,
                "fields": [
                    {"name": f, "check": c.check.value, "description": c.description, "thresholds": list(c.thresholds)}
                    for f, c in service.fields.items()
                ],
                "price": _price(bundle.bundle, service.price_class),
            }
        )
    for name, template in sorted(bundle.bundle.aggregate_templates.items()):
        out.append(
            {
                "name": name,
                "kind": "aggregate",
                "title": template.title,
                "description": template.description,
                "dataset": template.dataset,
                "dataset_title": titles.get(template.dataset),
                "available": name not in bundle.unavailable,
                "measure": template.measure.value,
                "column": template.column,
                "group_by": list(template.group_by),
                "epsilon": {"default": str(template.epsilon.default), "max": str(template.epsilon.max)},
                "price": _price(bundle.bundle, template.price_class),
            }
        )
    for name, model in sorted(bundle.bundle.models.items()):
        out.append(
            {
                "name": name,
                "kind": "model",
                "model_kind": model.kind,
                "title": model.title,
                "description": model.description,
                "dataset": bundle.bundle.dataset_of(name),
                "dataset_title": titles.get(bundle.bundle.dataset_of(name) or ""),
                "available": name not in bundle.unavailable,
                "card": model.card.model_dump(mode="json"),
                "price": _price(bundle.bundle, model.price_class),
            }
        )
    for name, job in sorted(bundle.bundle.job_services.items()):
        out.append(
            {
                "name": name,
                "kind": "job",
                "title": job.title,
                "description": job.description,
                "datasets": list(job.datasets),
                "available": name not in bundle.unavailable,
                "output_check": job.output_check,
                "reviewers": job.reviewers,
                "price": None,
            }
        )
    return out


def usage(rt: DisclosureNeeds) -> list[Json]:
    """Per service and month: verification calls and claims, and the releases charged to a
    privacy budget with what they spent per dataset (verification spends none: it is not
    differentially private, see docs/privacy-model.md)."""
    bundle = policy_admin.current(rt).bundle
    rows: dict[tuple[str, str], Json] = {}
    for service, month, calls, claims in rt.ledger.monthly_usage():
        kind = "verification" if service in bundle.verification_services else None
        rows[(month, service)] = {"service": service, "kind": kind, "month": month, "calls": calls,
                                  "claims": claims, "releases": 0, "privacy_budget_spent": {}}  # fmt: skip
    for service, dataset, month, releases, micro_epsilon, nano_delta in rt.budget.monthly_spending():
        row = rows.setdefault(
            (month, service),
            {"service": service, "kind": _kind(bundle, service), "month": month, "calls": 0, "claims": 0,
             "releases": 0, "privacy_budget_spent": {}},
        )  # fmt: skip
        row["releases"] += releases
        row["privacy_budget_spent"][dataset] = metering.amount_text(micro_epsilon, nano_delta)
    return [rows[key] for key in sorted(rows)]


def _kind(bundle: PolicyBundle, service: str) -> str | None:
    """What a service is, while the bundle in force still names it."""
    if service in bundle.aggregate_templates:
        return "aggregate"
    if service in bundle.models:
        return "model"
    if service in bundle.job_services:
        return "job"
    return None
