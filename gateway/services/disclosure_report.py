"""The annual disclosure report: for each authorized resource, its registration and authorization,
the operator, the term, the fee cap and the fees actually charged; the privacy budget spent per
dataset and service; and the list of services."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from gateway.services import disclosure, metering, policy_admin
from gateway.services.disclosure import DisclosureNeeds


def build(rt: DisclosureNeeds, year: int) -> dict[str, Any]:
    bundle = policy_admin.current(rt).bundle
    start, end = datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
    fees = metering.statement(rt, date(year, 1, 1), date(year, 12, 31))["rows"]
    records = {r.entry.dataset: r for r in rt.catalog.records()}
    resources = []
    for grant_id, grant in sorted(bundle.grants.items()):
        if grant.expires <= start or grant.not_before >= end:
            continue
        consumer = bundle.consumers.get(grant.consumer)
        organisation = bundle.organisations.get(consumer.organisation) if consumer else None
        price = bundle.price_classes.get(grant.price_class)
        charged = sum((Decimal(r["fee_yuan"]) for r in fees if r["grant"] == grant_id), Decimal(0))
        datasets = sorted({d for s in grant.services for d in bundle.datasets_of(s)})
        resources.append(
            {
                "grant": grant_id,
                "resources": [
                    {
                        "dataset": d,
                        "name": records[d].entry.title if d in records else d,
                        "registration_code": records[d].entry.registration_code if d in records else None,
                        "registration_status": records[d].status if d in records else "not registered",
                    }
                    for d in datasets
                ],
                "authorization_mode": grant.mode.value,
                "operator": organisation.name if organisation else grant.consumer,
                "scenario": grant.scenario,
                "term": {"from": grant.not_before.isoformat(), "until": grant.expires.isoformat()},
                "fee_cap": None if price is None else {"unit": price.unit, "cap_yuan": str(price.cap_yuan)},
                "fees_charged_yuan": str(charged),
            }
        )
    return {
        "year": year,
        "policy_version": bundle.version,
        "authorized_resources": resources,
        "privacy_budget_spent": _privacy_budget(rt, year),
        "products_and_services": disclosure.services(rt),
    }


def _privacy_budget(rt: DisclosureNeeds, year: int) -> list[dict[str, Any]]:
    """Per dataset and service: the releases charged to a privacy budget in the year and what
    they spent, every consumer together."""
    totals: dict[tuple[str, str], list[int]] = {}
    for row in rt.budget.spending(date(year, 1, 1).isoformat(), date(year, 12, 31).isoformat()):
        sums = totals.setdefault((row.dataset, row.service), [0, 0, 0])
        sums[0] += row.releases
        sums[1] += row.micro_epsilon
        sums[2] += row.nano_delta
    return [
        {"dataset": dataset, "service": service, "releases": n, "spent": metering.amount_text(e, d)}
        for (dataset, service), (n, e, d) in sorted(totals.items())
    ]


_CELL_ESCAPES = str.maketrans(
    {
        "|": "\\|",
        "\\": "\\\\",
        "`": "\\`",
        "<": "&lt;",
        ">": "&gt;",
        "&": "&amp;",
        "\n": " ",
        "\r": " ",
        "[": "\\[",
        "]": "\\]",
    }  # no link nor image without brackets
)


def _cell(value: object) -> str:
    """`value` as the text of one table cell. SECURITY: titles, descriptions and names come from
    catalogue entries and policy bundles: a `|`, a line break, a link or markup in one must not
    forge a row, a fee or a heading in the published report, nor run script or fetch an image
    where it is rendered."""
    return str(value).translate(_CELL_ESCAPES)


def markdown(report: dict[str, Any]) -> str:
    """The same report as a readable document; every value from the report is escaped as a cell."""
    report = _escaped(report)
    lines = [f"# Public data authorized operation: disclosure report {report['year']}", ""]
    lines += [f"Policy version in force: `{report['policy_version']}`.", "", "## Authorized resources", ""]
    lines += [
        "| resource | registration | mode | operator | term | fee cap | fees charged |",
        "|---|---|---|---|---|---|---|",
    ]
    for item in report["authorized_resources"]:
        names = "; ".join(r["name"] for r in item["resources"]) or "-"
        registration = "; ".join(f"{r['registration_code']} ({r['registration_status']})" for r in item["resources"])
        cap = f"{item['fee_cap']['cap_yuan']} yuan per {item['fee_cap']['unit']}" if item["fee_cap"] else "-"
        term = f"{item['term']['from'][:10]} to {item['term']['until'][:10]}"
        lines.append(
            f"| {names} | {registration or '-'} | {item['authorization_mode']} | {item['operator']} | {term} "
            f"| {cap} | {item['fees_charged_yuan']} yuan |"
        )
    lines += ["", "## Privacy budget spent", ""]
    lines += ["| dataset | service | releases charged | epsilon | delta |", "|---|---|---|---|---|"]
    for spent in report["privacy_budget_spent"]:
        lines.append(
            f"| {spent['dataset']} | {spent['service']} | {spent['releases']} "
            f"| {spent['spent']['epsilon']} | {spent['spent']['delta']} |"
        )
    if not report["privacy_budget_spent"]:
        lines.append("| - | - | 0 | 0 | 0 |")
    lines += ["", "## Products and services", "", "| service | what it answers | price |", "|---|---|---|"]
    for service in report["products_and_services"]:
        price = service["price"]
        shown = f"{price['price_yuan']} yuan per {price['unit']} (cap {price['cap_yuan']})" if price else "-"
        lines.append(f"| {service['title']} | {service['description'] or '-'} | {shown} |")
    return "\n".join(lines) + "\n"


def _escaped(value: Any) -> Any:
    """Every text in the report as a table cell's text (`_cell`), numbers and structure kept."""
    if isinstance(value, dict):
        return {k: _escaped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escaped(v) for v in value]
    return _cell(value) if isinstance(value, str) else value
