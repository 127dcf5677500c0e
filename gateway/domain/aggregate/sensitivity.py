"""The noisy statistics each measure releases, their L1 sensitivities and epsilon shares.

Pure: no I/O, no OpenDP. Everything here depends on public facts only (the measure, the
registered `max_rows` bound on one privacy unit, the cells and the column's bounds), so the
privacy of a release is fixed before any data is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from gateway.domain.aggregate.quantiles import score_ratio, split_quantile_epsilon
from gateway.domain.aggregate.templates import CONFIDENCE, Measure
from gateway.domain.intervals import half_range, split_mean_epsilon
from gateway.errors import InvalidRequest

__all__ = ["Statistic", "statistics_for"]


@dataclass(frozen=True, slots=True)
class Statistic:
    """One noisy vector the mechanism releases: its name, sensitivity and epsilon share."""

    name: str
    """`rows`, `units`, `values` (rows with a value), `sum`, `centred_sum`, `bins`, or for
    quantiles `coarse` (the coarse counts that bound where each one can be), and for the i-th
    quantile `quantile_i` (the chosen candidates) and `near_i` (rows near them)."""
    sensitivity: int
    """L1 for discrete Laplace vectors; for a selection, L-infinity of the scores of one cell."""
    micro_epsilon: int
    alpha: float = 1 - float(CONFIDENCE)
    """Each value of this statistic is within its half-width with probability 1 - alpha; a
    mean's and a quantile's interval are simulated from all of their statistics' noise
    (domain.intervals), so their statistics keep the full alpha."""
    mechanism: str = "discrete_laplace"
    """`discrete_laplace`, or `noisy_min` (report-noisy-min with exponential noise) for a selection."""


def statistics_for(
    measure: Measure,
    epsilon_micro: int,
    *,
    max_rows: int,
    cells: int,
    value_units: tuple[int, int] | None,
    quantiles: Sequence[Decimal] = (),
) -> tuple[Statistic, ...]:
    """The noisy vectors a measure needs and their L1 sensitivities (one unit added or removed).

    A unit has at most `max_rows` rows (registration enforced it), each in one cell:
    - a row count moves by at most `max_rows` in total;
    - a distinct-unit count moves by at most 1 per cell the unit touches: min(max_rows, cells);
    - a clamped sum moves by at most `max_rows` times the largest absolute clamped value;
    - histogram bins move by at most `max_rows` in total, and so do a quantile's coarse counts;
    - a quantile's candidate scores each move by at most `max_rows` times max(num, den - num) in
      every cell (domain.aggregate.quantiles); the cells' selections together cost the epsilon
      once, because a unit's rows in a cell cost in proportion and add up to `max_rows`.
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
        located, shares = split_quantile_epsilon(epsilon_micro, len(quantiles))
        out: list[Statistic] = [Statistic("coarse", max_rows, located, alpha)]
        for i, (q, (select, near)) in enumerate(zip(quantiles, shares, strict=True)):
            num, den = score_ratio(q)
            out.append(Statistic(f"quantile_{i}", max_rows * max(num, den - num), select, alpha, "noisy_min"))
            out.append(Statistic(f"near_{i}", max_rows, near, alpha))
        return tuple(out)
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
