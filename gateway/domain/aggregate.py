"""Approved aggregate templates, and the plan a query under one of them compiles to.

Pure: no I/O, no OpenDP. A template is what an administrator approved (dataset, measure,
column, filters, group-by columns, epsilon range). A query picks parameters inside it. `plan`
checks the query against the template and the catalogue before any data is read, and fixes
everything privacy depends on from public facts only: the cells (every combination of the
public category lists, in a fixed order), the statistics and their L1 sensitivities under
adding or removing one privacy unit (which the registration bounded to `max_rows` rows), and
the share of epsilon each statistic gets. The response shape is fixed here too: it never
depends on the data.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

import rfc8785
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.domain.budget import MICRO, Amount, micro_epsilon, nano_delta
from gateway.domain.catalog import NUMERIC_TYPES, CatalogEntry, Column, ColumnType, Identifier
from gateway.domain.intervals import RatioNoise, centre, half_range, split_mean_epsilon
from gateway.errors import InvalidRequest

MAX_CELLS = 5_000
"""Most output rows one query may have (cells times bins): bounds the work and the response."""
MAX_GROUP_BY = 2
CONFIDENCE = Decimal("0.95")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Measure(StrEnum):
    COUNT = "count"
    """Rows that pass the filters."""
    COUNT_UNITS = "count_units"
    """Distinct privacy units (persons, enterprises) with at least one such row."""
    SUM = "sum"
    MEAN = "mean"
    QUANTILE = "quantile"
    """Read off a DP histogram over the template's bins (post-processing: no extra cost)."""
    HISTOGRAM = "histogram"


MEASURES_ON_A_COLUMN = frozenset({Measure.SUM, Measure.MEAN, Measure.QUANTILE, Measure.HISTOGRAM})
MEASURES_WITH_BINS = frozenset({Measure.QUANTILE, Measure.HISTOGRAM})


class FilterRule(_Frozen):
    """What a caller may filter one column on: a subset of `values`, or a sub-range of `range`."""

    values: tuple[str | bool, ...] | None = None
    """Allowed values; for a column with a public category list, omit to allow all of them."""
    range: tuple[Decimal | date, Decimal | date] | None = None
    """Inclusive bounds of the range a caller may choose inside (numeric and date columns)."""

    @model_validator(mode="after")
    def _one_kind(self) -> FilterRule:
        if self.values is not None and self.range is not None:
            raise ValueError("a filter allows either `values` or a `range`, not both")
        if self.values is not None and len(set(self.values)) != len(self.values):
            raise ValueError("`values` must be unique")
        if self.range is not None and not self.range[0] <= self.range[1]:  # type: ignore[operator]
            raise ValueError("`range`: the lower end exceeds the upper end")
        return self


class EpsilonRange(_Frozen):
    default: Decimal = Field(gt=0)
    max: Decimal = Field(gt=0)

    def charge(self, asked: Decimal | str | None, what: str) -> int:
        """Micro-epsilon of a request: the default if none is asked, refused outside the range;
        errors name the `epsilon` parameter and say the maximum for `what` (a template...)."""
        try:
            micro = micro_epsilon(self.default if asked is None else asked)
        except InvalidRequest as bad:
            raise InvalidRequest(f"epsilon: {str(bad).removeprefix('epsilon: ')}") from None
        if micro > micro_epsilon(self.max):
            raise InvalidRequest(f"epsilon: at most {self.max} for this {what}")
        return micro

    @model_validator(mode="after")
    def _order(self) -> EpsilonRange:
        if self.default > self.max:
            raise ValueError("`default` exceeds `max`")
        micro_epsilon(self.default)
        micro_epsilon(self.max)
        return self


class KeySelection(_Frozen):
    """DP key selection for group-by columns without a public category list: only groups whose
    noisy count clears a threshold are released, and the threshold is set so that a group made
    by one privacy unit shows with probability at most `delta`."""

    delta: Decimal = Field(gt=0, le=Decimal("0.0001"))


class AggregateTemplate(_Frozen):
    title: str = Field(min_length=1)
    description: str = ""
    dataset: Identifier
    measure: Measure
    column: Identifier | None = None
    """The measured column (sum, mean, quantile, histogram); its catalogue bounds clamp values."""
    granularity: Decimal = Field(Decimal(1), gt=0)
    """Sums, means and quantiles are computed in whole multiples of this and released at it."""
    bins: tuple[Decimal, ...] = ()
    """Edges of the histogram bins (histogram, quantile): increasing, inside the column's bounds."""
    quantiles: tuple[Decimal, ...] = ()
    filters: dict[Identifier, FilterRule] = {}
    group_by: tuple[Identifier, ...] = ()
    """Columns a caller may group by (up to two at once). A column with a public category list
    gives every category; one without needs `key_selection` (count templates only)."""
    key_selection: KeySelection | None = None
    epsilon: EpsilonRange
    price_class: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")] | None = None

    @model_validator(mode="after")
    def _shape(self) -> AggregateTemplate:
        if (self.measure in MEASURES_ON_A_COLUMN) != (self.column is not None):
            raise ValueError("`column` is required for sum, mean, quantile and histogram, and allowed for no other")
        if self.measure in MEASURES_WITH_BINS:
            if len(self.bins) < 2 or list(self.bins) != sorted(set(self.bins)) or len(self.bins) > 201:
                raise ValueError("`bins`: 2 to 201 increasing edges")
        elif self.bins:
            raise ValueError("`bins` are only for histogram and quantile")
        if self.measure is Measure.QUANTILE:
            if not self.quantiles or not all(Decimal(0) < q < Decimal(1) for q in self.quantiles):
                raise ValueError("`quantiles`: one or more values strictly between 0 and 1")
        elif self.quantiles:
            raise ValueError("`quantiles` are only for the quantile measure")
        if len(set(self.group_by)) != len(self.group_by):
            raise ValueError("`group_by` columns must be unique")
        if self.key_selection is not None and self.measure is not Measure.COUNT:
            raise ValueError("`key_selection` is offered for count templates only")
        return self


def bin_count(template: AggregateTemplate) -> int:
    """Bins per cell: those of a histogram or quantile, else one."""
    return len(template.bins) - 1 if template.measure in MEASURES_WITH_BINS else 1


def check_template(template: AggregateTemplate, entry: CatalogEntry) -> list[tuple[tuple[str | int, ...], str]]:
    """What is wrong with a template given its dataset's catalogue entry: (path, message) pairs."""
    issues: list[tuple[tuple[str | int, ...], str]] = []
    columns = {c.name: c for c in entry.columns}
    if template.column is not None:
        column = columns.get(template.column)
        if column is None:
            issues.append((("column",), f"{template.dataset} has no column {template.column}"))
        elif column.type not in NUMERIC_TYPES or column.bounds is None:
            issues.append((("column",), f"{template.column} needs a numeric type and catalogue bounds"))
        else:
            low, high = (Decimal(str(b)) for b in column.bounds)
            if template.measure in MEASURES_WITH_BINS and not (low <= template.bins[0] and template.bins[-1] <= high):
                issues.append((("bins",), f"bins must lie inside the bounds of {template.column}"))
            if (low / template.granularity) != (low / template.granularity).to_integral_value() or (
                high / template.granularity
            ) != (high / template.granularity).to_integral_value():
                issues.append((("granularity",), f"the bounds of {template.column} must be multiples of it"))
            if max(abs(low), abs(high)) / template.granularity > 10**12:
                issues.append((("granularity",), "too fine for the column's bounds (over 10^12 units)"))
    for column_name, rule in template.filters.items():
        where: tuple[str | int, ...] = ("filters", column_name)
        column = columns.get(column_name)
        if column is None:
            issues.append((where, f"{template.dataset} has no column {column_name}"))
            continue
        if (
            column.sensitivity.value in ("identifier", "personal", "commercial_secret")
            and column.type is ColumnType.STRING
        ):
            issues.append((where, f"{column_name} is {column.sensitivity.value}: text filters only on public columns"))
        issues += [(where, m) for m in _check_rule(column, rule)]
    cells = 1
    for i, column_name in enumerate(template.group_by):
        column = columns.get(column_name)
        if column is None:
            issues.append((("group_by", i), f"{template.dataset} has no column {column_name}"))
        elif _categories(column) is None:
            if template.key_selection is None:
                issues.append(
                    (
                        ("group_by", i),
                        f"{column_name} has no public category list: grouping by it needs `key_selection`",
                    )
                )
            if column.sensitivity.value != "public":
                issues.append((("group_by", i), f"{column_name} is {column.sensitivity.value}: not a group key"))
        else:
            cells *= len(_categories(column) or ())
    largest = cells if len(template.group_by) <= MAX_GROUP_BY else 0
    if largest * bin_count(template) > MAX_CELLS:
        issues.append((("group_by",), f"grouping by every allowed column gives over {MAX_CELLS} cells"))
    return issues


def _categories(column: Column) -> tuple[str | bool, ...] | None:
    if column.type is ColumnType.BOOLEAN:
        return (False, True)
    return column.categories


def _check_rule(column: Column, rule: FilterRule) -> list[str]:
    categories = _categories(column)
    if rule.range is not None:
        if column.type is ColumnType.DATE:
            if not all(isinstance(v, date) for v in rule.range):
                return ["a date column's range is two dates"]
        elif column.type in NUMERIC_TYPES:
            if not all(isinstance(v, Decimal) for v in rule.range):
                return ["a numeric column's range is two numbers"]
        else:
            return [f"a range filter needs a numeric or date column; {column.name} is {column.type.value}"]
        return []
    if categories is None:
        return [f"{column.name} has no public category list: give allowed `values` or a `range`"]
    if rule.values is not None and not set(rule.values) <= set(categories):
        return [f"`values` must be categories of {column.name}"]
    return []


# --- queries -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Filter:
    column: str
    values: tuple[str | bool, ...] | None = None
    low: Decimal | date | None = None
    high: Decimal | date | None = None


@dataclass(frozen=True, slots=True)
class Statistic:
    """One noisy vector the mechanism releases: its name, L1 sensitivity and epsilon share."""

    name: str
    """`rows`, `units`, `values` (rows with a value), `sum`, `centred_sum` or `bins`."""
    sensitivity: int
    micro_epsilon: int
    alpha: float = 1 - float(CONFIDENCE)
    """Each value of this statistic is within its half-width with probability 1 - alpha; a
    quantile splits alpha among its bins (union bound); a mean's interval is simulated from
    both of its statistics' noise (domain.intervals), so its statistics keep the full alpha."""


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
        low = _parse_bound(column, asked.get("from", _jsonable(rule.range[0])), f"{where}.from")
        high = _parse_bound(column, asked.get("to", _jsonable(rule.range[1])), f"{where}.to")
        if not (rule.range[0] <= low <= high <= rule.range[1]):  # type: ignore[operator]
            raise InvalidRequest(
                f"{where}: the range must lie inside {_jsonable(rule.range[0])} to {_jsonable(rule.range[1])}"
                " and run upwards"
            )
        return Filter(column.name, low=low, high=high)
    allowed = rule.values if rule.values is not None else _categories(column) or ()
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


def _jsonable(value: Decimal | date | str | bool) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def statistics_for(
    measure: Measure,
    epsilon_micro: int,
    *,
    max_rows: int,
    cells: int,
    value_units: tuple[int, int] | None,
    bins: int = 1,
) -> tuple[Statistic, ...]:
    """The noisy vectors a measure needs and their L1 sensitivities (one unit added or removed).

    A unit has at most `max_rows` rows (registration enforced it), each in one cell:
    - a row count moves by at most `max_rows` in total;
    - a distinct-unit count moves by at most 1 per cell the unit touches: min(max_rows, cells);
    - a clamped sum moves by at most `max_rows` times the largest absolute clamped value;
    - histogram bins move by at most `max_rows` in total.
    A mean is a centred sum (of v - centre, where centre is the middle of the bounds, so each row
    moves it by at most the half-range) over the count of rows with a value, with the epsilon
    split between them to minimise the expected error (domain.intervals.split_mean_epsilon).
    """
    if measure is Measure.COUNT:
        return (Statistic("rows", max_rows, epsilon_micro),)
    if measure is Measure.COUNT_UNITS:
        return (Statistic("units", min(max_rows, cells), epsilon_micro),)
    alpha = 1 - float(CONFIDENCE)
    if measure is Measure.HISTOGRAM:
        return (Statistic("bins", max_rows, epsilon_micro),)
    if measure is Measure.QUANTILE:
        return (Statistic("bins", max_rows, epsilon_micro, alpha / bins),)
    if value_units is None:
        raise InvalidRequest("this measure needs a bounded column")  # unreachable: checked by policy check
    largest = max(abs(value_units[0]), abs(value_units[1]), 1)
    if measure is Measure.SUM:
        return (Statistic("sum", max_rows * largest, epsilon_micro),)
    to_sum, to_count = split_mean_epsilon(epsilon_micro)
    return (
        Statistic("centred_sum", max_rows * half_range(value_units), to_sum),
        Statistic("values", max_rows, to_count),
    )


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
    category_lists = [_categories(columns[g]) for g in group_by]
    selects_keys = any(c is None for c in category_lists)
    cells = () if selects_keys else tuple(itertools.product(*(c or () for c in category_lists)))
    bins = bin_count(template)
    if len(cells) * bins > MAX_CELLS:
        raise InvalidRequest(f"parameters.group_by: over {MAX_CELLS} output rows")
    epsilon_micro = template.epsilon.charge(epsilon, "template")
    if template.measure is Measure.MEAN and epsilon_micro < 2:  # both statistics need a share
        raise InvalidRequest("epsilon: a mean needs at least 0.000002 (it is split in two)")
    value_units: tuple[int, int] | None = None
    if template.column is not None:
        bounds = columns[template.column].bounds or (0.0, 0.0)
        value_units = (
            int(Decimal(str(bounds[0])) / template.granularity),
            int(Decimal(str(bounds[1])) / template.granularity),
        )
    unit = entry.privacy_unit
    statistics = statistics_for(
        template.measure, epsilon_micro, max_rows=unit.max_rows, cells=len(cells), value_units=value_units, bins=bins
    )
    normalised: dict[str, Any] = {
        "filters": {
            f.column: [*f.values] if f.values is not None else {"from": _jsonable(f.low), "to": _jsonable(f.high)}  # type: ignore[arg-type]
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
    }
    key = hashlib.sha256(rfc8785.dumps(key_material)).hexdigest()  # type: ignore[arg-type]  # JSON values only
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
    )


def epsilon_text(micro: int) -> str:
    """Micro-epsilon as an exact decimal string without trailing zeros."""
    text = format(Decimal(micro) / MICRO, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def bin_labels(edges: Sequence[Decimal]) -> list[list[Any]]:
    """Each bin as [low, high): the last one is closed, values past the edges are clamped in."""
    return [[_jsonable(low), _jsonable(high)] for low, high in itertools.pairwise(edges)]


# --- releases ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NoisyVector:
    """One statistic after the mechanism: noisy values, the noise scale, and the half-width that
    covers each true value with probability 1 - `Statistic.alpha`."""

    values: tuple[int, ...]
    scale: float
    half_width: int


def _number(value: Decimal) -> int | float:
    """Exact integers stay integers; other multiples of the granularity become the nearest float,
    whose shortest spelling is the decimal itself (as RFC 8785 writes it)."""
    return int(value) if value == value.to_integral_value() else float(value)


def _quantize(value: Decimal, granularity: Decimal, *, up: bool | None = None) -> Decimal:
    steps = value / granularity
    if up is None:
        whole = steps.to_integral_value()
    else:
        whole = steps.to_integral_value(rounding="ROUND_CEILING" if up else "ROUND_FLOOR")
    return whole * granularity


def _group(plan: Plan, cell: tuple[str | bool, ...]) -> dict[str, Any]:
    return dict(zip(plan.group_by, cell, strict=True))


def assemble(plan: Plan, noisy: Mapping[str, NoisyVector]) -> list[dict[str, Any]]:
    """The released rows: every cell (and bin, or quantile) in the plan's order, whatever the data.

    Pure post-processing of the noisy vectors: counts below zero are shown as zero, means and
    quantiles are clamped into the column's bounds and rounded to the granularity. None of it
    costs privacy, and none of it changes the shape of the response.
    """
    template = plan.template
    g = template.granularity
    rows: list[dict[str, Any]] = []
    if template.measure in (Measure.COUNT, Measure.COUNT_UNITS):
        stat = noisy["rows" if template.measure is Measure.COUNT else "units"]
        for cell, value in zip(plan.cells, stat.values, strict=True):
            rows.append({"group": _group(plan, cell), **_count(value, stat.half_width)})
    elif template.measure is Measure.HISTOGRAM:
        stat = noisy["bins"]
        labels = bin_labels(template.bins)
        for i, cell in enumerate(plan.cells):
            for j, label in enumerate(labels):
                rows.append(
                    {
                        "group": _group(plan, cell),
                        "bin": label,
                        **_count(stat.values[i * len(labels) + j], stat.half_width),
                    }
                )
    elif template.measure is Measure.SUM:
        stat = noisy["sum"]
        nonnegative = plan.value_units is not None and plan.value_units[0] >= 0
        for cell, noisy_value in zip(plan.cells, stat.values, strict=True):
            value, low, high = noisy_value, noisy_value - stat.half_width, noisy_value + stat.half_width
            if nonnegative:
                value, low, high = max(0, value), max(0, low), max(0, high)
            rows.append(
                {
                    "group": _group(plan, cell),
                    "value": _number(value * g),
                    "interval": [_number(low * g), _number(high * g)],
                }
            )
    elif template.measure is Measure.MEAN:
        sums, counts = noisy["centred_sum"], noisy["values"]
        noise = RatioNoise.draw(sums.scale, counts.scale, int(plan.key[:16], 16))
        for cell, total, count in zip(plan.cells, sums.values, counts.values, strict=True):
            rows.append({"group": _group(plan, cell), **_mean(plan, total, count, noise)})
    else:
        stat = noisy["bins"]
        width = bin_count(template)
        for i, cell in enumerate(plan.cells):
            counts_in_cell = stat.values[i * width : (i + 1) * width]
            for q in template.quantiles:
                rows.append(
                    {
                        "group": _group(plan, cell),
                        "quantile": float(q),
                        **_quantile(plan, counts_in_cell, q, stat.half_width),
                    }
                )
    return rows


def _count(value: int, half_width: int) -> dict[str, Any]:
    return {"value": max(0, value), "interval": [max(0, value - half_width), max(0, value + half_width)]}


def _mean(plan: Plan, total: int, count: int, noise: RatioNoise) -> dict[str, Any]:
    """centre + centred sum / count, with the central 95% of the ratios the noise allows."""
    g = plan.template.granularity
    units = plan.value_units or (0, 0)
    middle = Decimal(centre(units))
    low, high = Decimal(units[0]) * g, Decimal(units[1]) * g

    def clamp(value: Decimal) -> Decimal:
        return min(max(value, low), high)

    estimate = clamp(_quantize((middle + Decimal(total) / Decimal(max(count, 1))) * g, g))
    found = noise.interval(total, count, 1 - float(CONFIDENCE))
    if found is None:
        interval = [low, high]  # too few rows to say more than the bounds
    else:
        interval = [
            clamp(_quantize((middle + Decimal(repr(found[0]))) * g, g, up=False)),
            clamp(_quantize((middle + Decimal(repr(found[1]))) * g, g, up=True)),
        ]
    estimate = min(max(estimate, interval[0]), interval[1])
    width = interval[1] - interval[0]
    note = None
    if width * 4 > high - low:  # over a quarter of the bounds: say why, from released figures only
        note = (
            f"this group has about {max(count, 0)} rows with a value (a noisy count); at epsilon"
            f" {epsilon_text(plan.amount.micro_epsilon)} the 95% interval is {_number(width)} wide"
        )
    return {"value": _number(estimate), "interval": [_number(interval[0]), _number(interval[1])], "note": note}


def _quantile(plan: Plan, counts: Sequence[int], q: Decimal, half_width: int) -> dict[str, Any]:
    """A quantile read off noisy bin counts, with an interval sound whenever every bin's noise is
    within `half_width` (probability at least 95% by the union bound over the bins).

    The true quantile lies in the first bin j where (1 - q) * below_j >= q * above_j holds for the
    true counts. It can hold first at the earliest bin where it holds for the most favourable
    counts inside the noise bounds, and it surely holds from the first bin where it holds for the
    least favourable ones.
    """
    edges = plan.template.bins
    g = plan.template.granularity
    fq = Decimal(q)
    clipped = [max(0, c) for c in counts]
    top = [c + half_width for c in counts]
    bottom = [max(0, c - half_width) for c in counts]

    def first(below: Sequence[int], above: Sequence[int]) -> int:
        # Running totals (exact integers): one pass instead of two sums per bin.
        num, den = fq.as_integer_ratio()
        under, over = 0, sum(above)
        for j in range(len(counts)):
            under += below[j]
            over -= above[j]
            if (den - num) * under >= num * over:
                return j
        return len(counts) - 1

    j_lo, j_hi, j = first(top, bottom), first(bottom, top), first(clipped, clipped)
    total = sum(clipped)
    before = sum(clipped[:j])
    inside = clipped[j]
    fraction = (fq * total - before) / inside if inside > 0 else Decimal("0.5")
    fraction = min(max(fraction, Decimal(0)), Decimal(1))
    estimate = _quantize(edges[j] + fraction * (edges[j + 1] - edges[j]), g)
    low, high = _quantize(edges[j_lo], g, up=False), _quantize(edges[j_hi + 1], g, up=True)
    estimate = min(max(estimate, low), high)
    return {"value": _number(estimate), "interval": [_number(low), _number(high)]}


def assemble_selected(plan: Plan, released: Mapping[tuple[str, ...], int], half_width: int) -> list[dict[str, Any]]:
    """The rows of a key-selected count: the groups that cleared the threshold, sorted by key."""
    return [
        {"group": dict(zip(plan.group_by, key, strict=True)), **_count(value, half_width)}
        for key, value in sorted(released.items())
    ]
