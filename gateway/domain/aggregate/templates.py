"""Approved aggregate templates: what an administrator may offer, and its check against the catalogue.

Pure: no I/O, no OpenDP. A template is what an administrator approved (dataset, measure,
column, filters, group-by columns, epsilon range); `check_template` says what is wrong with one
given its dataset's catalogue entry, so a bad template is refused before any query runs.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.domain.budget import micro_epsilon
from gateway.domain.catalog import NUMERIC_TYPES, CatalogEntry, Column, ColumnType, Identifier
from gateway.errors import InvalidRequest

__all__ = [
    "CONFIDENCE",
    "MAX_CELLS",
    "MAX_GROUP_BY",
    "MEASURES_ON_A_COLUMN",
    "MEASURES_WITH_BINS",
    "AggregateTemplate",
    "EpsilonRange",
    "FilterRule",
    "KeySelection",
    "Measure",
    "bin_count",
    "categories_of",
    "check_template",
]

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
    """Chosen among up to 4,001 candidates by the exponential mechanism (aggregate.quantiles)."""
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
    """Edges of the histogram bins: increasing, inside the column's bounds. A quantile template
    may give them too: only the first and last edge count, as the range of its candidates."""
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
        if self.measure is Measure.HISTOGRAM or (self.measure is Measure.QUANTILE and self.bins):
            if len(self.bins) < 2 or list(self.bins) != sorted(set(self.bins)) or len(self.bins) > 201:
                raise ValueError("`bins`: 2 to 201 increasing edges")
        elif self.bins:
            raise ValueError("`bins` are only for histogram and quantile")
        if self.measure is Measure.QUANTILE:
            if not self.quantiles or not all(Decimal(0) < q < Decimal(1) for q in self.quantiles):
                raise ValueError("`quantiles`: one or more values strictly between 0 and 1")
            if len(self.quantiles) > 10 or len(set(self.quantiles)) != len(self.quantiles):
                raise ValueError("`quantiles`: up to 10 different values")
            if any(int(q.normalize().as_tuple().exponent) < -4 for q in self.quantiles):
                raise ValueError("`quantiles`: at most four decimal places")
        elif self.quantiles:
            raise ValueError("`quantiles` are only for the quantile measure")
        if len(set(self.group_by)) != len(self.group_by):
            raise ValueError("`group_by` columns must be unique")
        if self.key_selection is not None and self.measure is not Measure.COUNT:
            raise ValueError("`key_selection` is offered for count templates only")
        return self


def bin_count(template: AggregateTemplate) -> int:
    """Output rows per cell: a histogram's bins, a quantile template's quantiles, else one."""
    if template.measure is Measure.QUANTILE:
        return len(template.quantiles)
    return len(template.bins) - 1 if template.measure is Measure.HISTOGRAM else 1


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
            if template.bins and not (low <= template.bins[0] and template.bins[-1] <= high):
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
            continue
        if column.sensitivity.value != "public":  # with a category list or without (a personal boolean)
            issues.append((("group_by", i), f"{column_name} is {column.sensitivity.value}: not a group key"))
        if categories_of(column) is None:
            if template.key_selection is None:
                issues.append(
                    (
                        ("group_by", i),
                        f"{column_name} has no public category list: grouping by it needs `key_selection`",
                    )
                )
        else:
            cells *= len(categories_of(column) or ())
    largest = cells if len(template.group_by) <= MAX_GROUP_BY else 0
    if largest * bin_count(template) > MAX_CELLS:
        issues.append((("group_by",), f"grouping by every allowed column gives over {MAX_CELLS} cells"))
    return issues


def categories_of(column: Column) -> tuple[str | bool, ...] | None:
    if column.type is ColumnType.BOOLEAN:
        return (False, True)
    return column.categories


def _check_rule(column: Column, rule: FilterRule) -> list[str]:
    categories = categories_of(column)
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
