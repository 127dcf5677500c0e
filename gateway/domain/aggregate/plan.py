"""The plan a query under an approved template compiles to.

Pure: no I/O, no OpenDP. A query picks parameters inside a template. `plan` checks the query
against the template and the catalogue before any data is read, and fixes everything privacy
depends on from public facts only: the cells (every combination of the public category lists,
in a fixed order), the statistics and their sensitivities (aggregate.sensitivity), and the
share of epsilon each statistic gets. The response shape is fixed here too: it never depends
on the data.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from gateway.domain.aggregate.quantiles import Candidates, candidates_for
from gateway.domain.aggregate.sensitivity import Statistic, statistics_for
from gateway.domain.aggregate.templates import (
    MAX_CELLS,
    MAX_GROUP_BY,
    MEASURES_WITH_BINS,
    AggregateTemplate,
    FilterRule,
    Measure,
    bin_count,
    categories_of,
)
from gateway.domain.budget import MICRO, Amount, nano_delta
from gateway.domain.canonical_json import canonical
from gateway.domain.catalog import CatalogEntry, Column, ColumnType
from gateway.errors import InvalidRequest

__all__ = ["Filter", "Plan", "bin_labels", "epsilon_text", "jsonable", "plan"]


@dataclass(frozen=True, slots=True)
class Filter:
    column: str
    values: tuple[str | bool, ...] | None = None
    low: Decimal | date | None = None
    high: Decimal | date | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    template_name: str
    template: AggregateTemplate
    dataset: str
    version: str
    privacy_unit: str
    max_rows: int
    filters: tuple[Filter, ...]
    group_by: tuple[str, ...]
    cells: tuple[tuple[str | bool, ...], ...]
    """Every combination of the group-by columns' public categories, in catalogue order; empty
    when the groups are chosen by DP key selection (`selects_keys`)."""
    value_units: tuple[int, int] | None
    """The measured column's bounds in multiples of the granularity (clamping range)."""
    statistics: tuple[Statistic, ...]
    amount: Amount
    parameters: dict[str, Any]
    """The query's parameters after normalisation, as JSON: what the response echoes."""
    key: str
    """Same template, parameters, epsilon and dataset version give the same key."""
    edges: tuple[Decimal, ...] = ()
    """Edges of the bins the engine counts each cell's values in (histogram, quantile); a value's
    bin is the last edge at or below it, clamped to the first and last bins."""
    candidates: Candidates | None = None
    """A quantile's candidate grid: bin i of `edges` is [c_i, c_i+1)."""

    @property
    def exact(self) -> tuple[str, ...]:
        """The exact vectors the engine computes: `bins` for a histogram or quantile (counts per
        cell and bin), else one per statistic, named as the statistic."""
        if self.template.measure in MEASURES_WITH_BINS:
            return ("bins",)
        return tuple(s.name for s in self.statistics)

    @property
    def epsilon(self) -> Decimal:
        return self.amount.epsilon

    @property
    def selects_keys(self) -> bool:
        return self.amount.nano_delta > 0


def _parse_number(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, str, float)):
        raise InvalidRequest(f"{where}: give a number")
    try:
        number = Decimal(str(value))
    except ArithmeticError:
        raise InvalidRequest(f"{where}: give a number") from None
    if not number.is_finite():
        raise InvalidRequest(f"{where}: must be finite")
    return number


def _parse_bound(column: Column, value: Any, where: str) -> Decimal | date:
    if column.type is ColumnType.DATE:
        if not isinstance(value, str):
            raise InvalidRequest(f"{where}: give a date as YYYY-MM-DD")
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise InvalidRequest(f"{where}: give a date as YYYY-MM-DD") from None
    return _parse_number(value, where)


def _filter(column: Column, rule: FilterRule, asked: Any) -> Filter:
    where = f"parameters.filters.{column.name}"
    if rule.range is not None:
        if not isinstance(asked, Mapping) or set(asked) - {"from", "to"} or not asked:
            raise InvalidRequest(f'{where}: give a range as {{"from": ..., "to": ...}}')
        low = _parse_bound(column, asked.get("from", jsonable(rule.range[0])), f"{where}.from")
        high = _parse_bound(column, asked.get("to", jsonable(rule.range[1])), f"{where}.to")
        if not (rule.range[0] <= low <= high <= rule.range[1]):  # type: ignore[operator]
            raise InvalidRequest(
                f"{where}: the range must lie inside {jsonable(rule.range[0])} to {jsonable(rule.range[1])}"
                " and run upwards"
            )
        return Filter(column.name, low=low, high=high)
    allowed = rule.values if rule.values is not None else categories_of(column) or ()
    if not isinstance(asked, list) or not asked:
        raise InvalidRequest(f"{where}: give a non-empty list of values")
    if len(asked) > len(allowed) or not all(isinstance(v, (str, bool)) for v in asked):
        raise InvalidRequest(f"{where}: values must be among the allowed ones")
    chosen = set(asked)
    for value in chosen:
        if value not in allowed or isinstance(value, bool) != (column.type is ColumnType.BOOLEAN):
            shown = ", ".join(str(v).lower() if isinstance(v, bool) else v for v in allowed)
            raise InvalidRequest(f"{where}: a value is not allowed (allowed: {shown})")
    return Filter(column.name, values=tuple(v for v in allowed if v in chosen))


MECHANISMS = "2026-12"
"""Names how releases are made: bumped with any change to the noise, the epsilon shares, the
intervals or the result's format. SECURITY: it is part of a question's key, so a release stored
before such a change is not handed to a new payer after it, whose answer would differ from its
own preview's and show that someone had asked before."""


def jsonable(value: Decimal | date | str | bool) -> Any:
    if isinstance(value, Decimal):  # one spelling a number: "5.50" and 5.5 are one question
        return int(value) if value == value.to_integral_value() else str(value.normalize())
    if isinstance(value, date):
        return value.isoformat()
    return value


def plan(
    name: str,
    template: AggregateTemplate,
    entry: CatalogEntry,
    version: str,
    parameters: Mapping[str, Any],
    *,
    epsilon: Decimal | str | None,
) -> Plan:
    """Check a query against its template and compile it; raises InvalidRequest naming the parameter.

    Nothing here reads data: every refusal depends on the request and public facts only.
    """
    unknown = sorted(set(parameters) - {"filters", "group_by"})
    if unknown:
        raise InvalidRequest("parameters: only filters and group_by are parameters")
    columns = {c.name: c for c in entry.columns}
    asked_filters = parameters.get("filters") or {}
    if not isinstance(asked_filters, Mapping):
        raise InvalidRequest("parameters.filters: give a mapping of column to values or range")
    filters: list[Filter] = []
    for column_name in sorted(asked_filters):
        rule = template.filters.get(column_name)
        if rule is None:
            allowed = ", ".join(sorted(template.filters)) or "none"
            raise InvalidRequest(f"parameters.filters: a column is not a filter of this template (allowed: {allowed})")
        filters.append(_filter(columns[column_name], rule, asked_filters[column_name]))
    asked_groups = parameters.get("group_by") or []
    if not isinstance(asked_groups, list) or not all(isinstance(g, str) for g in asked_groups):
        raise InvalidRequest("parameters.group_by: give a list of column names")
    for group in asked_groups:
        if group not in template.group_by:
            allowed = ", ".join(template.group_by) or "none"
            raise InvalidRequest(f"parameters.group_by: a column is not allowed (allowed: {allowed})")
    if len(set(asked_groups)) != len(asked_groups) or len(asked_groups) > MAX_GROUP_BY:
        raise InvalidRequest(f"parameters.group_by: up to {MAX_GROUP_BY} different columns")
    group_by = tuple(g for g in template.group_by if g in asked_groups)
    category_lists = [categories_of(columns[g]) for g in group_by]
    selects_keys = any(c is None for c in category_lists)
    cells = () if selects_keys else tuple(itertools.product(*(c or () for c in category_lists)))
    bins = bin_count(template)
    if len(cells) * bins > MAX_CELLS:
        raise InvalidRequest(f"parameters.group_by: over {MAX_CELLS} output rows")
    epsilon_micro = template.epsilon.charge(epsilon, "template")
    if template.measure is Measure.MEAN and epsilon_micro < 2:  # both statistics need a share
        raise InvalidRequest("epsilon: a mean needs at least 0.000002 (it is split in two)")
    if template.measure is Measure.QUANTILE and epsilon_micro < 1 + 2 * len(template.quantiles):
        raise InvalidRequest("epsilon: too small to share among this template's quantiles")
    value_units: tuple[int, int] | None = None
    if template.column is not None:
        bounds = columns[template.column].bounds or (0.0, 0.0)
        value_units = (
            int(Decimal(str(bounds[0])) / template.granularity),
            int(Decimal(str(bounds[1])) / template.granularity),
        )
    unit = entry.privacy_unit
    statistics = statistics_for(
        template.measure,
        epsilon_micro,
        max_rows=unit.max_rows,
        cells=len(cells),
        value_units=value_units,
        quantiles=template.quantiles,
    )
    candidates = None
    edges = template.bins
    if template.measure is Measure.QUANTILE and value_units is not None:
        candidates = candidates_for(value_units, template.bins, template.granularity, len(cells))
        edges = candidates.edges(template.granularity)
    normalised: dict[str, Any] = {
        "filters": {
            f.column: [*f.values] if f.values is not None else {"from": jsonable(f.low), "to": jsonable(f.high)}  # type: ignore[arg-type]
            for f in filters
        },
        "group_by": list(group_by),
    }
    delta_nano = 0
    if selects_keys:
        if template.key_selection is None:  # unreachable: the policy check refuses such a template
            raise InvalidRequest("parameters.group_by: this column cannot be grouped by")
        delta_nano = nano_delta(template.key_selection.delta)
    amount = Amount(epsilon_micro, delta_nano)
    key_material = {
        "template": name,
        "definition": template.model_dump(mode="json"),
        "dataset": template.dataset,
        "version": version,
        "parameters": normalised,
        "micro_epsilon": epsilon_micro,
        "mechanisms": MECHANISMS,
    }
    key = hashlib.sha256(canonical(key_material)).hexdigest()
    return Plan(
        template_name=name,
        template=template,
        dataset=template.dataset,
        version=version,
        privacy_unit=unit.column,
        max_rows=unit.max_rows,
        filters=tuple(filters),
        group_by=group_by,
        cells=cells,
        value_units=value_units,
        statistics=statistics,
        amount=amount,
        parameters=normalised,
        key=key,
        edges=edges,
        candidates=candidates,
    )


def epsilon_text(micro: int) -> str:
    """Micro-epsilon as an exact decimal string without trailing zeros."""
    text = format(Decimal(micro) / MICRO, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def bin_labels(edges: Sequence[Decimal]) -> list[list[Any]]:
    """Each bin as [low, high): the last one is closed, values past the edges are clamped in."""
    return [[jsonable(low), jsonable(high)] for low, high in itertools.pairwise(edges)]
