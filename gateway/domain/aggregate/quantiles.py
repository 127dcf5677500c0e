"""Quantiles by the exponential mechanism over a fine grid of candidates, scored from one histogram.

Pure: no I/O, no OpenDP (gateway.privacy selects and adds the noise). The engine counts the
rows of each cell in the bins [c_i, c_i+1) of a regular grid of candidates c_0 < c_1 < ... in
whole units of the granularity (up to 2,001 of them, as OpenDP's own quantile uses), in one pass
with an arithmetic bin index. From those exact counts each candidate gets OpenDP's quantile
score for q = num / den, |(den - num) * #(x < c) - num * #(x >= c)|: one row added or removed
moves every score by at most max(num, den - num), so a privacy unit of `max_rows` rows moves it
by at most `max_rows` times that (the L-infinity sensitivity the selection is calibrated to).
Report-noisy-min then picks a candidate. A second, small share of epsilon releases a noisy count
of the rows near the chosen candidate: the local density the interval needs
(domain.intervals.QuantileNoise). The grid, the shares and the window are public.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from fractions import Fraction

import numpy as np

__all__ = [
    "MAX_CANDIDATES",
    "SELECT_SHARE",
    "WINDOW_STEPS",
    "Candidates",
    "candidates_for",
    "score_ratio",
    "scores",
    "split_quantile_epsilon",
    "window",
]

MAX_CANDIDATES = 2_001
MAX_COUNTED = 1_000_000
"""Most exact counts (cells times candidates) one query keeps in memory: many cells get fewer candidates."""
SELECT_SHARE = Fraction(9, 10)
"""The share of a quantile's epsilon that selects it; the rest counts the rows near it."""
WINDOW_STEPS = 10
"""The rows counted near a chosen candidate lie within this many grid steps of it, each side."""


@dataclass(frozen=True, slots=True)
class Candidates:
    """c_i = first + i * step (in units of the granularity) for i < count."""

    first: int
    step: int
    count: int

    def unit(self, index: int) -> int:
        return self.first + index * self.step

    @property
    def last(self) -> int:
        return self.unit(self.count - 1)

    def edges(self, granularity: Decimal) -> tuple[Decimal, ...]:
        """Bin edges for the engine: bin i is [c_i, c_i+1); the last one takes every value from c_last up."""
        return tuple(Decimal(self.unit(i)) * granularity for i in range(self.count + 1))


def candidates_for(
    value_units: tuple[int, int], bins: Sequence[Decimal], granularity: Decimal, cells: int
) -> Candidates:
    """The finest regular grid over the bounds (or the template's first to last edge) with at
    most 2,001 candidates, and fewer when many cells would make over a million counts."""
    low, high = value_units
    if bins:
        low = max(low, int((bins[0] / granularity).to_integral_value(ROUND_CEILING)))
        high = min(high, int((bins[-1] / granularity).to_integral_value(ROUND_FLOOR)))
    high = max(high, low + 1)
    most = max(2, min(MAX_CANDIDATES, MAX_COUNTED // max(cells, 1)))
    step = max(1, -(-(high - low) // (most - 1)))
    return Candidates(low, step, (high - low) // step + 1)


def score_ratio(q: Decimal) -> tuple[int, int]:
    """q as num / den in lowest terms (q has at most four decimal places)."""
    num, den = q.as_integer_ratio()
    return num, den


def split_quantile_epsilon(micro_epsilon: int, quantiles: int) -> list[tuple[int, int]]:
    """(selection, window count) micro-epsilon of each quantile: equal parts, summing exactly."""
    shares = []
    for i in range(quantiles):
        part = micro_epsilon // quantiles + (1 if i < micro_epsilon % quantiles else 0)
        select = min(max(round(part * SELECT_SHARE), 1), part - 1)
        shares.append((select, part - select))
    return shares


def scores(counts: Sequence[int], q: Decimal) -> list[int]:
    """Each candidate's score (lower is better) from the exact counts of its cell's bins."""
    num, den = score_ratio(q)
    held = np.asarray(counts, dtype=np.int64)
    below = np.concatenate(([0], np.cumsum(held)[:-1]))
    total = int(held.sum())
    if den * total >= 2**62:  # beyond int64: exact Python integers
        running, out = 0, []
        for count in counts:
            out.append(abs((den - num) * running - num * (total - running)))
            running += count
        return out
    return [int(s) for s in np.abs((den - num) * below - num * (total - below))]


def window(counts: Sequence[int], chosen: int) -> tuple[int, int]:
    """(exact rows, number of bins) of the bins within WINDOW_STEPS of the chosen candidate."""
    start, stop = max(0, chosen - WINDOW_STEPS), min(len(counts), chosen + WINDOW_STEPS)
    return sum(counts[start:stop]), stop - start
