"""A plan as a Spark aggregation: the same rows, column for column, as plan_sql's DuckDB query.

Each step mirrors `gateway.engine.plan_sql.aggregate_sql` (its general form, which clamps and
rounds every value): filters, the value in whole units of the granularity (NULL and NaN
missing, infinities clamped), the bin index, then one aggregate per statistic. Integer
division truncates towards zero as DuckDB's `//` does; sums are DECIMAL(38, 0) as DuckDB's are
HUGEINT, so no sum wraps.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from gateway.domain.aggregate import MEASURES_WITH_BINS, Plan
from gateway.domain.intervals import centre
from gateway.engine.plan_sql import grid_of

_EXACT = "decimal(38,0)"


def _truncating_division(value: Column, step: int) -> Column:
    """value // step as DuckDB computes it on BIGINT: the quotient rounded towards zero."""
    return ((value - value % F.lit(step)) / F.lit(step)).cast("bigint")


def aggregate_frame(frame: DataFrame, plan: Plan) -> DataFrame:
    """The plan's statistics per (group keys..., [bin]) as one small DataFrame."""
    for f in plan.filters:
        if f.values is not None:
            frame = frame.filter(F.col(f.column).isin(list(f.values)))
        else:
            frame = frame.filter(F.col(f.column).between(F.lit(f.low), F.lit(f.high)))
    template = plan.template
    inner: list[Column] = [F.col(g) for g in plan.group_by]
    binned = template.measure in MEASURES_WITH_BINS
    if template.column is not None and plan.value_units is not None:
        column = F.col(template.column)
        low, high = plan.value_units
        as_double = column.cast("double")
        missing = column.isNull() | F.isnan(as_double)
        granularity = float(template.granularity)
        clamped = F.greatest(
            F.least(as_double, F.lit(float(high * template.granularity))), F.lit(float(low * template.granularity))
        )
        rounded = F.round(clamped / F.lit(granularity)).cast("bigint")
        units = F.greatest(F.least(rounded, F.lit(high)), F.lit(low))
        value = F.when(missing, F.lit(None).cast("bigint")).otherwise(units)
        inner.append(value.alias("_v"))
        if binned:
            inner.append(_bin(plan, value, clamped, missing).alias("_b"))
    else:
        inner.append(F.lit(None).cast("bigint").alias("_v"))
    inner.append(F.col(plan.privacy_unit).alias("_u"))
    rows = frame.select(*inner)
    keys = [*plan.group_by, "_b"] if binned else list(plan.group_by)
    if binned:
        rows = rows.filter(F.col("_b").isNotNull())
    aggregates = [_statistic(name, plan) for name in plan.exact]
    grouped = rows.groupBy(*keys) if keys else rows.groupBy()
    return grouped.agg(*aggregates).select(*keys, *[f"s{i}" for i in range(len(aggregates))])


def _bin(plan: Plan, value: Column, clamped: Column, missing: Column) -> Column:
    edges, grid = plan.edges, grid_of(plan)
    last = len(edges) - 2
    if grid is not None:
        first, step = grid
        index = _truncating_division(value - F.lit(first), step)
        return F.when(missing, F.lit(None).cast("bigint")).otherwise(F.least(F.greatest(index, F.lit(0)), F.lit(last)))
    chosen = F.when(missing, F.lit(None).cast("bigint"))
    for i, edge in enumerate(edges[1:-1]):
        chosen = chosen.when(clamped < F.lit(float(edge)), F.lit(i))
    return chosen.otherwise(F.lit(last))


def _statistic(name: str, plan: Plan) -> Column:
    index = list(plan.exact).index(name)
    alias = f"s{index}"
    if name == "centred_sum":  # exact in integers: sum(v - c) = sum(v) - c * count(v)
        middle = centre(plan.value_units or (0, 0))
        total = F.coalesce(F.sum(F.col("_v").cast(_EXACT)), F.lit(0).cast(_EXACT))
        return (total - F.lit(middle).cast(_EXACT) * F.count("_v").cast(_EXACT)).alias(alias)
    expression = {
        "rows": lambda: F.count(F.lit(1)),
        "values": lambda: F.count("_v"),
        "sum": lambda: F.sum(F.col("_v").cast(_EXACT)),
        "units": lambda: F.countDistinct("_u"),
        "bins": lambda: F.count(F.lit(1)),
    }[name]()
    return expression.alias(alias)
