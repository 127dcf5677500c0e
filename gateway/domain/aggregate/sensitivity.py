"""The noisy statistics each measure releases, their L1 sensitivities and epsilon shares.

Pure: no I/O, no OpenDP. Everything here depends on public facts only (the measure, the
registered `max_rows` bound on one privacy unit, the cells and the column's bounds), so the
privacy of a release is fixed before any data is read.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.domain.aggregate.templates import CONFIDENCE, Measure
from gateway.domain.intervals import half_range, split_mean_epsilon
from gateway.errors import InvalidRequest

__all__ = ["Statistic", "statistics_for"]


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
