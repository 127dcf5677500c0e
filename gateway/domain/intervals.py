"""Intervals for estimators that combine noisy statistics, by simulation from the noise itself.

Pure post-processing: every input is a released noisy value or a public noise scale, so nothing
here costs privacy. A mean is a ratio of two noisy statistics; a union bound over both would
cover 99-100% of the time and be wider than needed. Instead the interval inverts the estimator:
the true ratio is (noisy sum - e_s) / (noisy count - e_n) for the noise (e_s, e_n) actually drawn,
so drawing many (e_s, e_n) from the same discrete Laplace distributions and taking the central
95% of the resulting ratios gives an interval that holds the truth about 95% of the time
(tests/aggregate/test_mean_accuracy.py measures it).

Also the split of a mean's epsilon between its two statistics, in exact integers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache

import numpy as np

DRAWS = 4_000
"""Draws per interval: the 2.5% and 97.5% points are then within about 0.5 points of coverage."""

SUM_SHARE = Fraction("0.5905")
"""1 / (1 + 3^(-1/3)) to four digits: the share of a mean's epsilon that goes to its centred sum.

The mean's error is about (e_s - d e_n) / n, with d the distance of the mean from the centre of
the bounds. With sensitivities k R (sum, R the half-range) and k (count), its variance is
proportional to R^2 / eps_s^2 + d^2 / eps_n^2; with d^2 = R^2 / 3 (a mean anywhere in the
bounds, uniformly) the minimum over eps_s + eps_n = eps is at eps_s / eps_n = 3^(1/3). The group
size scales both terms alike, so it does not move the split.
"""


def split_mean_epsilon(micro_epsilon: int) -> tuple[int, int]:
    """(sum, count) shares of a mean's epsilon, in micro-epsilon: both positive, summing exactly."""
    to_sum = round(micro_epsilon * SUM_SHARE)
    to_sum = min(max(to_sum, 1), micro_epsilon - 1)
    return to_sum, micro_epsilon - to_sum


def centre(value_units: tuple[int, int]) -> int:
    """The whole unit at (or just below) the middle of the bounds: a centred sum is over v - centre."""
    return (value_units[0] + value_units[1]) // 2


def half_range(value_units: tuple[int, int]) -> int:
    """The largest |v - centre| of a value inside the bounds: the centred sum's per-row sensitivity."""
    c = centre(value_units)
    return max(value_units[1] - c, c - value_units[0], 1)


def discrete_laplace(rng: np.random.Generator, scale: float, size: int) -> np.ndarray:
    """Draws of the discrete Laplace noise with this scale: the difference of two geometric draws."""
    if scale <= 0:
        return np.zeros(size, dtype=np.float64)
    p = -np.expm1(-1.0 / scale)  # 1 - e^(-1/scale), accurate for large scales
    return (rng.geometric(p, size) - rng.geometric(p, size)).astype(np.float64)


@dataclass(frozen=True, slots=True)
class RatioNoise:
    """Noise draws shared by every cell of one release (each cell's interval uses them alone)."""

    sums: np.ndarray
    counts: np.ndarray

    @classmethod
    def draw(cls, sum_scale: float, count_scale: float, seed: int) -> RatioNoise:
        """`seed` is public (the plan's key): the same release gets the same intervals."""
        rng = np.random.default_rng(seed)
        return cls(discrete_laplace(rng, sum_scale, DRAWS), discrete_laplace(rng, count_scale, DRAWS))

    def interval(self, total: int, count: int, alpha: float) -> tuple[float, float] | None:
        """Central 1 - alpha interval of the true ratio given a noisy (total, count); None when
        too many draws leave no row at all (the interval is then the whole bounds)."""
        rows = count - self.counts
        ratios = (total - self.sums) / np.where(rows >= 1, rows, 1)
        low_side = np.where(rows >= 1, ratios, -np.inf)
        high_side = np.where(rows >= 1, ratios, np.inf)
        if np.count_nonzero(rows < 1) > alpha / 2 * DRAWS:
            return None
        # No interpolation: the ends are draws themselves, never a blend with an infinite one.
        low = np.quantile(low_side, alpha / 2, method="lower")
        high = np.quantile(high_side, 1 - alpha / 2, method="higher")
        return float(low), float(high)


def expected_mean_width(sum_scale: float, count_scale: float, rows: int, spread: int, alpha: float) -> float | None:
    """The width (in units) of a mean's interval over `rows` rows whose mean lies spread / sqrt(3)
    from the centre (the typical distance for a mean anywhere in the bounds); None when so few
    rows give the whole bounds."""
    if rows < 1:
        return None
    found = RatioNoise.draw(sum_scale, count_scale, 0).interval(round(rows * spread / 3**0.5), rows, alpha)
    return None if found is None else min(found[1] - found[0], 2.0 * spread)


QUANTILE_DRAWS = 2_000
"""Simulated releases per quantile interval."""
MOST_OFFSETS = 400
"""Candidates simulated each side of the truth: beyond them the selection almost never lands."""


@dataclass(frozen=True, slots=True)
class QuantileNoise:
    """Noise draws shared by every cell of one quantile release, for its intervals.

    A quantile chosen by report-noisy-min over a grid of candidates errs by where the noise lands
    relative to the true quantile, which depends on how many rows lie between candidates. Near
    the chosen candidate the rows are modelled as spread evenly, at the density a released noisy
    count of the rows around it gives; the truth is anywhere within a grid step of a candidate.
    Each draw then redraws that count's noise (so the density's own error is in the interval),
    the truth's place in the step, and the selection's exponential noise, and records which
    candidate the mechanism picks. The central 95% of (picked - truth) bounds the error.
    """

    positions: np.ndarray
    """Where the truth lies in its grid step, uniform in [-1/2, 1/2) steps; `errors` puts it on
    a whole unit, as every value is (a candidate is then exactly right when the step is 1)."""
    counts: np.ndarray
    """Discrete Laplace noise of the window count at its scale."""
    seed: int
    """Of the selection's exponential noise, drawn for as many candidates as a cell needs."""
    high_count: float
    """The 99th percentile of `counts`: the sparsest density the draws reach, for the reach."""
    shared: dict[tuple[int, int, float], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = field(
        default_factory=dict, compare=False, repr=False
    )
    """`_model`'s results by (side, step, scale)."""

    @classmethod
    def draw(cls, count_scale: float, seed: int) -> QuantileNoise:
        """`seed` is public (the plan's key): the same release gets the same intervals."""
        rng = np.random.default_rng(seed)
        counts = discrete_laplace(rng, count_scale, QUANTILE_DRAWS)
        return cls(rng.uniform(-0.5, 0.5, QUANTILE_DRAWS), counts, seed, float(np.quantile(counts, 0.99)))

    def errors(self, rows: int, width: int, step: int, den: int, scale: float) -> np.ndarray | None:
        """(picked - truth) in units for each draw, given the noisy count of `rows` over `width`
        units near the pick, grid `step`, the score's factor `den` (the score moves by den per
        row between candidates) and the selection's noise `scale`; None when the noisy count
        says no row is near it (the interval is then the whole candidate range)."""
        if rows < 1:
            return None
        # A draw that leaves no rows near the pick is given half a row: wide, never empty.
        density = np.maximum(rows - self.counts, 0.5) / max(width, 1)
        # Candidates whose score exceeds the best by 20 noise scales are picked with odds e^-20.
        sparsest = max(rows - self.high_count, 0.5) / max(width, 1)
        reach = 20 * scale / (den * sparsest * step) + 2
        side = int(min(MOST_OFFSETS, np.ceil(reach)))
        offsets, truth, apart, selection = self._model(side, step, scale)
        noisy = (den * density[:, None]).astype(np.float32) * apart - selection
        picked = offsets[np.argmin(noisy, axis=1)]
        return np.asarray(picked - truth)

    def _model(self, side: int, step: int, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """What the draws of cells that reach as far on the same grid share: the candidates'
        offsets (units, relative to the truth's step), the truth, how far apart the two are, and
        the selection's noise times its scale. Computed once per release and shape."""
        key = (side, step, scale)
        if key not in self.shared:
            offsets = np.arange(-side, side + 1, dtype=np.float64) * step
            truth = np.round(self.positions * step)
            apart = np.abs(offsets[None, :] - truth[:, None]).astype(np.float32)
            self.shared[key] = (offsets, truth, apart, np.float32(scale) * _selection_noise(self.seed, side))
        return self.shared[key]

    def interval(
        self, rows: int, width: int, *, step: int, den: int, scale: float, alpha: float
    ) -> tuple[float, float] | None:
        """Offsets (low, high) in units such that the truth lies in [pick + low, pick + high]
        with probability about 1 - alpha; None as in `errors`."""
        found = self.errors(rows, width, step, den, scale)
        if found is None:
            return None
        ordered = np.sort(found)  # np.quantile's linear interpolation, at a third of its cost
        low, high = (_interpolated(ordered, level) for level in (alpha / 2, 1 - alpha / 2))
        return -high, -low


def _interpolated(ordered: np.ndarray, level: float) -> float:
    """The `level` quantile of sorted values, interpolated linearly between neighbours."""
    at = level * (len(ordered) - 1)
    below = int(at)
    above = min(below + 1, len(ordered) - 1)
    return float(ordered[below] + (ordered[above] - ordered[below]) * (at - below))


@lru_cache(maxsize=32)
def _selection_noise(seed: int, side: int) -> np.ndarray:
    """The selection's exponential noise for `side` candidates each side of the truth, the same
    for every cell of a release that reaches as far (so drawn once per release, not per cell)."""
    drawn = np.random.default_rng((seed, side)).standard_exponential((QUANTILE_DRAWS, 2 * side + 1), dtype=np.float32)
    drawn.flags.writeable = False
    return drawn


def expected_quantile_width(
    rows: int, span: int, *, step: int, den: int, scale: float, count_scale: float, windows: int, alpha: float
) -> float | None:
    """The width (in units) of a quantile's interval when `rows` rows spread evenly over `span`
    units (a density no higher than most data's at a quantile); None when so few rows give the
    whole range. `windows` is the number of grid steps the window count covers."""
    near = round(rows * windows * step / max(span, 1))
    found = QuantileNoise.draw(count_scale, 0).interval(
        near, windows * step, step=step, den=den, scale=scale, alpha=alpha
    )
    return None if found is None else min(found[1] - found[0], float(span))
