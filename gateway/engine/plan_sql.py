"""SQL for an aggregate plan: the exact statistics it names, from catalogue identifiers and
bound parameters only."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from gateway.domain.aggregate import MEASURES_WITH_BINS, Plan
from gateway.domain.intervals import centre
from gateway.engine.sql import TABLE, quote
from gateway.errors import InternalError


def regular_grid(edges: Sequence[Decimal], granularity: Decimal) -> tuple[int, int] | None:
    """(first edge, step) in units of the granularity when the edges are evenly spaced whole
    units: a value's bin is then (units - first) // step, clamped to the first and last bins
    (the same bins as comparing the value in units with the edges)."""
    units = [e / granularity for e in edges]
    if any(u != u.to_integral_value() for u in units):
        return None
    whole = [int(u) for u in units]
    step = whole[1] - whole[0]
    if step < 1 or any(b - a != step for a, b in itertools.pairwise(whole)):
        return None
    return whole[0], step


def grid_of(plan: Plan) -> tuple[int, int] | None:
    """`regular_grid` of a binned plan's edges, for every engine. A quantile's candidates are one
    by construction, so their (first, step) is taken as built: checking thousands of edges again
    took about 2 ms a release."""
    if plan.candidates is not None:
        return plan.candidates.first, plan.candidates.step
    return regular_grid(plan.edges, plan.template.granularity)


def _cell_number(plan: Plan, bind: Callable[[Any], str]) -> str:
    """A row's number in `plan.cells` (the product of the group columns' category lists, in
    order): mixed radix over each key's place in its list, -1 when a key is in none (or NULL)."""
    places, terms, radix = [], [], 1
    for i in reversed(range(len(plan.group_by))):
        categories = list(dict.fromkeys(cell[i] for cell in plan.cells))
        place = f"coalesce(list_position({bind(categories)}, {quote(plan.group_by[i])}), 0)"
        places.append(f"{place} > 0")
        terms.append(f"({place} - 1) * {radix}")
        radix *= max(len(categories), 1)
    if radix != len(plan.cells):  # the cells are not the product of the lists (a bug)
        raise InternalError("a plan's cells are not its categories' product (this is a bug)")
    return f"CASE WHEN {' AND '.join(places)} THEN {' + '.join(terms)} ELSE -1 END"


def aggregate_sql(
    plan: Plan, within_bounds: bool = False, is_integer: bool = False, *, cell_numbers: bool = False
) -> tuple[str, list[Any]]:
    """SQL for a plan: catalogue identifiers (quoted) and $n placeholders only. `cell_numbers`:
    a histogram or quantile grouped by columns names each row's cell by its number in
    `plan.cells` (-1 for keys in no cell) instead of its keys (`plan_results.binned_statistics`)."""
    params: list[Any] = []

    def bind(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    conditions: list[str] = []
    for f in plan.filters:
        if f.values is not None:
            conditions.append(f"list_contains({bind(list(f.values))}, {quote(f.column)})")
        else:
            conditions.append(f"{quote(f.column)} BETWEEN {bind(f.low)} AND {bind(f.high)}")
    template = plan.template
    if cell_numbers and plan.group_by and template.measure in MEASURES_WITH_BINS:
        # A quantile's result has over a hundred thousand rows: their keys, made Python strings
        # and matched to cells one by one, took about a fifth as long as the query.
        selected, inner = ["_c"], [f"{_cell_number(plan, bind)} AS _c"]
    else:
        selected = [quote(g) for g in plan.group_by]
        inner = [*selected]
    if template.column is not None and plan.value_units is not None:
        column = quote(template.column)
        low, high = plan.value_units
        as_double = f"CAST({column} AS DOUBLE)"
        missing = f"{column} IS NULL OR isnan({as_double})"
        if within_bounds:  # checked on this very version file (Snapshot._checked_values)
            missing = f"{column} IS NULL"
            clamped = column
        else:
            upper, lower = bind(float(high * template.granularity)), bind(float(low * template.granularity))
            clamped = f"greatest(least({as_double}, {upper}), {lower})"
        if within_bounds and is_integer and template.granularity == 1:
            units = column
            inner.append(f"{column} AS _v")
        else:
            rounded = f"CAST(round({clamped} / {bind(float(template.granularity))}) AS BIGINT)"
            units = f"greatest(least({rounded}, {bind(high)}), {bind(low)})"
            inner.append(f"CASE WHEN {missing} THEN NULL ELSE {units} END AS _v")
        if template.measure in MEASURES_WITH_BINS:
            # A missing value is in no bin: the rows are filtered before binning (a CASE around
            # every bin index made the query about 1.6 times slower), and bins are all that is counted.
            conditions.append(f"NOT ({missing})")
            edges = plan.edges
            grid = grid_of(plan)
            if grid is not None:  # arithmetic index on the value in units: 5-8x faster than a CASE
                first, step = grid
                offset = f" - {bind(first)}" if first else ""
                index = f"(CAST({units} AS BIGINT){offset}) // {bind(step)}"
                # Values in units lie within [low, high]: a clamp that cannot bind is left out
                # (both cost about a fifth of a quantile's query).
                if low < first:
                    index = f"greatest({index}, 0)"
                if (high - first) // step > len(edges) - 2:
                    index = f"least({index}, {bind(len(edges) - 2)})"
                inner.append(f"{index} AS _b")
            else:
                steps = " ".join(f"WHEN {clamped} < {bind(float(e))} THEN {i}" for i, e in enumerate(edges[1:-1]))
                inner.append(f"CASE {steps} ELSE {len(edges) - 2} END AS _b" if steps else "0 AS _b")
    else:
        inner.append("NULL AS _v")
    inner.append(f"{quote(plan.privacy_unit)} AS _u")
    outer = [*selected]
    where = " AND ".join(conditions) or "TRUE"
    if template.measure in MEASURES_WITH_BINS:
        outer.append("_b")
    for name in plan.exact:
        if name == "centred_sum":  # exact in integers: sum(v - c) = sum(v) - c * count(v)
            middle = bind(centre(plan.value_units or (0, 0)))
            outer.append(f"CAST(sum(_v) AS HUGEINT) - CAST({middle} AS HUGEINT) * count(_v)")
            continue
        outer.append(
            {
                "rows": "count(*)",
                "values": "count(_v)",
                "sum": "sum(_v)",
                "units": "count(DISTINCT _u)",
                "bins": "count(*)",
            }[name]
        )
    keys = outer[: len(selected) + (1 if "_b" in outer else 0)]
    group = f"GROUP BY {', '.join(keys)}" if keys else ""
    # SECURITY: every name is a catalogue identifier passed through quote(); every value is bound.
    sql = f"SELECT {', '.join(outer)} FROM (SELECT {', '.join(inner)} FROM {TABLE} WHERE {where}) {group}"  # noqa: S608
    return sql, params
