"""Aggregate statistics under differential privacy (统计), charged to the privacy-budget ledger.

One query, or a batch released together:
1. authorize each query: a grant of this consumer covers the template and the purpose, now,
   and nothing it touches is frozen;
2. plan it from public facts only (template, catalogue, dataset version); every refusal about
   parameters, epsilon or the accuracy asked for happens here, before any data is read;
3. an identical query released before (same template, normalised parameters, epsilon and
   dataset version) gets its stored release again, at no charge;
4. reserve the charges of the rest, all or none, on three levels (grant, organisation, dataset
   version);
5. execute in the domain; from the moment data is read, the charge stays, whatever happens;
6. add OpenDP noise to the exact statistics and post-process them into rows with intervals;
7. commit the charge and store the release in one transaction (a release stored first by an
   identical concurrent query wins, so one question has one answer);
8. audit, sign, respond.
SECURITY: the response holds only noisy statistics over public cells, and no error after step 2
depends on the data.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from gateway import privacy
from gateway.domain.aggregate import (
    CONFIDENCE,
    Measure,
    Plan,
    assemble,
    assemble_selected,
    bin_count,
    epsilon_text,
    plan,
)
from gateway.domain.budget import Accounts, Amount
from gateway.domain.catalog import row_count_floor
from gateway.domain.policy import authorize, check_not_frozen
from gateway.domain.principal import Principal
from gateway.domain.trail import AuditEvent, Cost, Json, PrivacySpent
from gateway.errors import InvalidRequest, NotFound, ServiceUnavailable, VeilgateError
from gateway.services import aggregate_noise, charging, policy_admin
from gateway.services.charging import ChargingNeeds, amount_json
from gateway.services.needs import HasDomain, HasFreezes
from gateway.services.policy_admin import PolicyReader
from gateway.services.release import Release, ReleaseNeeds, prepare_release, release


class AggregateNeeds(PolicyReader, ChargingNeeds, ReleaseNeeds, HasDomain, HasFreezes, Protocol):
    """What a DP aggregate takes."""


MAX_BATCH = 20


def warm_up(rt: AggregateNeeds) -> list[str]:
    """Open every served DuckDB dataset version not yet open, so that its column facts are read
    now and not by some request's first use of it (engine.snapshot.column_facts): at startup,
    then every few seconds for versions registered since. Returns the datasets it could not
    open; each one's requests say why, and the next round tries again."""
    failed = []
    opened = set(rt.domain.with_facts())
    for record in rt.catalog.records():
        if not record.is_served or record.entry.engine == "spark" or (record.entry.dataset, record.version) in opened:
            continue
        try:
            with rt.domain.snapshot(record.entry.dataset, record.version):
                pass
        except VeilgateError:
            failed.append(record.entry.dataset)
    return failed


@dataclass(frozen=True, slots=True)
class Query:
    template: str
    parameters: dict[str, Any]
    epsilon: str | None = None
    max_interval_width: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Authorized:
    query: Query
    plan: Plan
    grant_id: str
    accounts: Accounts
    typical_rows: int | None = None
    """Rows per cell as predicted from public facts (services.aggregate.typical_rows)."""


@dataclass(frozen=True, slots=True)
class Batch:
    """A batch after steps 1 and 2: nothing is reserved or read yet."""

    purpose: str
    items: tuple[Authorized, ...]
    policy_version: str

    @property
    def total(self) -> Amount:
        total = Amount(0, 0)
        for item in self.items:
            total += item.plan.amount
        return total


def known_templates(rt: AggregateNeeds, names: Sequence[str]) -> list[tuple[str, str]]:
    """(name, dataset) of the names that are templates: only those may reach an audit leaf."""
    bundle = policy_admin.current(rt).bundle
    found = {n: bundle.aggregate_templates[n].dataset for n in names if n in bundle.aggregate_templates}
    return sorted(found.items())


def templates_for(rt: AggregateNeeds, principal: Principal) -> list[Json]:
    """The templates a consumer's current grants cover, with their public definition."""
    bundle = policy_admin.current(rt).bundle
    now = datetime.now(UTC)
    mine = {
        s
        for g in bundle.grants.values()
        if g.consumer == principal.client_id and g.not_before <= now < g.expires
        for s in g.services
    }
    return [
        {"name": name, **template.model_dump(mode="json", exclude={"price_class"})}
        for name, template in sorted(bundle.aggregate_templates.items())
        if name in mine
    ]


def authorize_batch(rt: AggregateNeeds, principal: Principal, purpose: str, queries: Sequence[Query]) -> Batch:
    """Steps 1 and 2 for every query of a batch: the first refusal refuses the batch."""
    if not 1 <= len(queries) <= MAX_BATCH:
        raise InvalidRequest(f"queries: 1 to {MAX_BATCH} per batch")
    policy = policy_admin.current(rt)
    bundle = policy.bundle
    now = datetime.now(UTC)
    organisation = bundle.organisation_of(principal)
    freezes = rt.freezes.active()
    items: list[Authorized] = []
    for index, query in enumerate(queries):
        where = f"queries.{index}." if len(queries) > 1 else ""
        template = bundle.aggregate_templates.get(query.template)
        if template is None:
            raise NotFound(f"{where}template: no aggregate template of this name")
        grant_id, _grant = authorize(bundle, principal, query.template, purpose, now)
        if query.template in policy.unavailable:
            raise ServiceUnavailable(f"{where}template: unavailable: {policy.unavailable[query.template]}")
        check_not_frozen(
            freezes,
            consumer=principal.client_id,
            organisation=organisation,
            service=query.template,
            dataset=template.dataset,
        )
        record = rt.catalog.get(template.dataset)
        if not record.is_served:
            raise ServiceUnavailable(f"{where}template: unavailable: its dataset is not served")
        try:
            compiled = plan(
                query.template, template, record.entry, record.version, query.parameters, epsilon=query.epsilon
            )
            expected_rows = typical_rows(record.rows, compiled)
            _check_accuracy(compiled, query.max_interval_width, expected_rows)
        except InvalidRequest as bad:
            raise InvalidRequest(f"{where}{bad}") from None
        items.append(
            Authorized(
                query,
                compiled,
                grant_id,
                bundle.budget_accounts(
                    grant_id=grant_id,
                    consumer=principal.client_id,
                    organisation=organisation,
                    dataset=template.dataset,
                    version=record.version,
                ),
                expected_rows,
            )
        )
    return Batch(purpose, tuple(items), policy.version)


def _delta(amount: Amount) -> str:
    return format(amount.delta.normalize(), "f")


def _plain(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def typical_rows(rows: int, compiled: Plan) -> int | None:
    """Rows per cell if the dataset's public order of magnitude of rows spread evenly over them."""
    floor = row_count_floor(rows)
    return floor // max(1, len(compiled.cells)) if floor and not compiled.selects_keys else None


def _check_accuracy(compiled: Plan, widest: Decimal | None, rows: int | None) -> None:
    if widest is None:
        return
    width = aggregate_noise.expected_interval_width(compiled, rows)
    if width is None:
        raise InvalidRequest(
            "max_interval_width: this interval depends on rows the catalogue does not say (fewer than 1,000 "
            "rows, or groups chosen by the data); leave it out"
        )
    if width > widest:
        raise InvalidRequest(
            f"max_interval_width: at this epsilon the 95% interval is {width} wide; raise epsilon or accept a wider one"
        )


def preview(batch: Batch) -> Json:
    """What a batch would cost and how accurate it would be; reads no data and spends nothing."""
    return {
        "purpose": batch.purpose,
        "total": amount_json(batch.total),
        "queries": [
            {
                "template": item.query.template,
                "parameters": item.plan.parameters,
                "epsilon": epsilon_text(item.plan.amount.micro_epsilon),
                "delta": _delta(item.plan.amount),
                "rows": None if item.plan.selects_keys else len(item.plan.cells) * _rows_per_cell(item.plan),
                "interval_width": _optional_plain(
                    aggregate_noise.expected_interval_width(item.plan, item.typical_rows)
                ),
                "noise": aggregate_noise.expected(item.plan),
            }
            for item in batch.items
        ],
    }


def _optional_plain(value: Decimal | None) -> int | float | None:
    return None if value is None else _plain(value)


def _rows_per_cell(compiled: Plan) -> int:
    template = compiled.template
    return len(template.quantiles) if template.measure is Measure.QUANTILE else bin_count(template)


def compute(rt: AggregateNeeds, compiled: Plan, reading: Callable[[], None]) -> Json:
    """Steps 5 and 6 for one plan: the exact statistics, then the noise, then the rows.

    `reading` is called once the dataset version is open, just before the query runs: a
    failure before it (the version cannot be opened) leaves the reservation to be returned.
    """
    if compiled.selects_keys:
        rows = _select_keys(rt, compiled, reading)
    else:
        with rt.domain.snapshot(compiled.dataset, compiled.version) as snapshot:
            reading()
            exact = snapshot.aggregate(compiled)
        noisy = aggregate_noise.release_noise(compiled, exact)
        del exact
        rows = assemble(compiled, noisy)
    template = compiled.template
    return {
        "template": compiled.template_name,
        "dataset": compiled.dataset,
        "dataset_version": compiled.version,
        "measure": template.measure.value,
        "column": template.column,
        "parameters": compiled.parameters,
        "epsilon": epsilon_text(compiled.amount.micro_epsilon),
        "delta": _delta(compiled.amount),
        "confidence": float(CONFIDENCE),
        "granularity": _plain(template.granularity),
        "noise": aggregate_noise.expected(compiled),
        "rows": rows,
    }


def _select_keys(rt: AggregateNeeds, compiled: Plan, reading: Callable[[], None]) -> list[Json]:
    """Counts by keys observed in the data, through OpenDP's thresholded mechanism: a key made by
    few units is withheld (with probability at least 1 - delta for a single unit's key)."""
    with rt.domain.snapshot(compiled.dataset, compiled.version) as snapshot:
        reading()
        exact = {json.dumps(list(key)): count for key, count in snapshot.grouped_counts(compiled).items()}
    (statistic,) = compiled.statistics
    selected = privacy.select_keys(exact, compiled.max_rows, statistic.micro_epsilon, compiled.amount.nano_delta)
    del exact
    released = {tuple(json.loads(key)): value for key, value in selected.counts.items()}
    return assemble_selected(compiled, released, privacy.half_width(selected.scale, statistic.alpha))


def run(rt: AggregateNeeds, batch: Batch) -> list[tuple[Json, bool]]:
    """Steps 3 to 7 (services.charging): each query's release, and whether this request paid."""
    return charging.run(
        rt,
        [
            charging.Charge(
                item.plan.key,
                item.plan.amount,
                item.accounts,
                functools.partial(compute, rt, item.plan),
                service=item.query.template,
            )
            for item in batch.items
        ],
    )


def release_batch(
    rt: AggregateNeeds, principal: Principal, event: AuditEvent, batch: Batch, *, single: bool
) -> Release:
    """Steps 3 to 8: the signed document of a whole batch (or of one query)."""
    results = run(rt, batch)
    charged = Amount(0, 0)
    for item, (_result, paid) in zip(batch.items, results, strict=True):
        if paid:
            charged += item.plan.amount
    releases = [
        {
            **result,
            "replayed": not paid,
            "charged": amount_json(item.plan.amount if paid else Amount(0, 0)),
        }
        for item, (result, paid) in zip(batch.items, results, strict=True)
    ]
    grants = sorted({item.grant_id for item in batch.items})
    datasets = sorted({item.plan.dataset for item in batch.items})
    body: Json = {"purpose": batch.purpose, "grant": grants[0] if len(grants) == 1 else grants}
    body |= releases[0] if single else {"releases": releases}
    spent = PrivacySpent(epsilon=charged.epsilon, delta=charged.delta)
    first = batch.items[0]
    pending = prepare_release(
        rt,
        event,
        service=first.query.template if single else "aggregate-batch",
        request={"purpose": batch.purpose, "queries": [request_of(item.query) for item in batch.items]},
        result=body,
        dataset=datasets[0] if len(datasets) == 1 else None,
        dataset_version=first.plan.version if len(datasets) == 1 else None,
        policy_version=batch.policy_version,
        privacy_spent=spent,
        cost=Cost(epsilon=charged.epsilon, delta=charged.delta),
        grant=grants[0] if len(grants) == 1 else None,
    )
    del principal
    return release(rt, pending)


def request_of(query: Query) -> Json:
    return {
        "template": query.template,
        "parameters": query.parameters,
        "epsilon": query.epsilon,
        "max_interval_width": None if query.max_interval_width is None else str(query.max_interval_width),
    }
