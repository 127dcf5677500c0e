"""A plan's query result as the exact statistics services release: shared by every engine.

An engine returns rows laid out as (group keys..., [bin index], one value per statistic in the
plan's order); these functions place them in the plan's cells, so DuckDB and Spark answers are
read the same way and compared the same way. No engine library is imported here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.domain.aggregate import MEASURES_WITH_BINS, Plan
from gateway.errors import InternalError

ExactStatistics = Mapping[str, list[int] | npt.NDArray[np.int64]]
"""Per statistic of a plan, one integer per cell (times bin): a list, or for the bins of a
histogram or quantile as the DuckDB engine places them, a numpy vector (a quantile has a
hundred thousand bins, and a list of them cost as long to make and read back as the query)."""


def exact_statistics(plan: Plan, rows: Iterable[Sequence[Any]]) -> ExactStatistics:
    """One integer per cell (times bin) for each statistic; rows whose group keys are not in
    the public category lists belong to no cell and are dropped."""
    names = list(plan.exact)
    binned = plan.template.measure in MEASURES_WITH_BINS  # the query then returns a bin index
    bins = len(plan.edges) - 1 if binned else 1
    position = {cell: i for i, cell in enumerate(plan.cells)}
    out = {name: [0] * (len(plan.cells) * bins) for name in names}
    width = len(plan.group_by)
    for row in rows:
        cell = position.get(tuple(row[:width]))
        if cell is None:
            continue
        slot = cell * bins + (int(row[width]) if binned else 0)
        for name, value in zip(names, row[width + (1 if binned else 0) :], strict=True):
            out[name][slot] = int(value or 0)
    return out


def binned_statistics(plan: Plan, columns: Sequence[np.ndarray]) -> ExactStatistics:
    """`exact_statistics` of a histogram or quantile from its result as columns ([cell number],
    bin index, count; `aggregate_sql(..., cell_numbers=True)`), placed with numpy: a quantile's
    result has tens of thousands of rows, which a loop over tuples placed in about as long as
    the query took. A cell number of -1 (keys in no cell) is dropped."""
    if len(columns) != (3 if plan.group_by else 2):  # cell number (if grouped), bin index, count
        raise InternalError("a binned result has the wrong columns (this is a bug)")
    bins = len(plan.edges) - 1
    *cells, index, counts = (np.asarray(column, dtype=np.int64) for column in columns)
    cell = cells[0] if plan.group_by else np.zeros(len(index), dtype=np.int64)
    placed = np.zeros(len(plan.cells) * bins, dtype=np.int64)
    kept = cell >= 0
    placed[cell[kept] * bins + index[kept]] = counts[kept]
    return {"bins": placed}


def observed_counts(plan: Plan, rows: Iterable[Sequence[Any]]) -> dict[tuple[str, ...], int]:
    """Counts per group key observed in the data (as text); keys with a NULL are left out."""
    width = len(plan.group_by)
    out: dict[tuple[str, ...], int] = {}
    for row in rows:
        if any(v is None for v in row[:width]):
            continue
        out[tuple(v.isoformat() if hasattr(v, "isoformat") else str(v) for v in row[:width])] = int(row[width])
    return out
