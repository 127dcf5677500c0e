"""The noise of an aggregate plan: which mechanism each statistic gets, how it is calibrated,
how wide the released intervals will be, and the release of the noisy statistics themselves.

Imports OpenDP only through gateway.privacy. Everything before `release_noise` reads public
facts only (the plan and the catalogue's order of magnitude of rows), so a preview and an
accuracy refusal never depend on the data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

import numpy as np
import numpy.typing as npt

from gateway import privacy
from gateway.domain import intervals
from gateway.domain.aggregate import CONFIDENCE, Measure, NoisyVector, Plan, Statistic, epsilon_text, quantiles
from gateway.domain.trail import Json
from gateway.errors import InternalError

__all__ = ["expected", "expected_interval_width", "plain", "release_noise", "scale_of"]


def plain(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def expected(compiled: Plan) -> list[Json]:
    """Per statistic: the mechanism, its scale and the half-width of its 95% interval; public."""
    out: list[Json] = []
    in_units = ("sum", "centred_sum")  # statistics counted in multiples of the granularity
    for statistic in compiled.statistics:
        scale = scale_of(statistic)
        factor = compiled.template.granularity if statistic.name in in_units else Decimal(1)
        half = None
        if statistic.mechanism == "discrete_laplace":
            half = plain(Decimal(privacy.half_width(scale, statistic.alpha)) * factor)
        out.append(
            {
                "statistic": statistic.name,
                "mechanism": statistic.mechanism,
                "sensitivity": statistic.sensitivity,
                "scale": int(scale) if scale.is_integer() else scale,
                "epsilon": epsilon_text(statistic.micro_epsilon),
                "confidence": 1 - statistic.alpha,
                "half_width": half,
            }
        )
    if compiled.selects_keys:
        scale, threshold = privacy.calibrate_threshold(
            compiled.max_rows, compiled.amount.micro_epsilon, compiled.amount.nano_delta
        )
        _delta = format(compiled.amount.delta.normalize(), "f")
        out[0] |= {
            "mechanism": "discrete_laplace_threshold",
            "threshold": threshold,
            "delta": format(compiled.amount.delta.normalize(), "f"),
        }
    return out


def scale_of(statistic: Statistic) -> float:
    if statistic.mechanism == "noisy_min":
        return privacy.calibrate_selection(statistic.sensitivity, statistic.micro_epsilon)
    return privacy.calibrate(statistic.sensitivity, statistic.micro_epsilon)


def expected_interval_width(compiled: Plan, typical_rows: int | None = None) -> Decimal | None:
    """The width of each released value's 95% interval from public facts only. A mean's and a
    quantile's depend on the rows in a cell: predicted for `typical_rows` (the catalogue's public
    order of magnitude of the dataset's rows spread evenly over the cells), None without it."""
    measure = compiled.template.measure
    if measure is Measure.MEAN:
        return _mean_width(compiled, typical_rows)
    if measure is Measure.QUANTILE:
        return _quantile_width(compiled, typical_rows)
    (statistic,) = compiled.statistics
    half = privacy.half_width(privacy.calibrate(statistic.sensitivity, statistic.micro_epsilon), statistic.alpha)
    factor = compiled.template.granularity if measure is Measure.SUM else Decimal(1)
    return Decimal(2 * half) * factor


def _mean_width(compiled: Plan, typical_rows: int | None) -> Decimal | None:
    if typical_rows is None or compiled.value_units is None:
        return None
    sums, counts = compiled.statistics
    width = intervals.expected_mean_width(
        privacy.calibrate(sums.sensitivity, sums.micro_epsilon),
        privacy.calibrate(counts.sensitivity, counts.micro_epsilon),
        typical_rows,
        intervals.half_range(compiled.value_units),
        1 - float(CONFIDENCE),
    )
    if width is None:
        low, high = compiled.value_units
        return Decimal(high - low) * compiled.template.granularity
    return (Decimal(repr(width)) * compiled.template.granularity).quantize(
        compiled.template.granularity, "ROUND_CEILING"
    )


def _quantile_width(compiled: Plan, typical_rows: int | None) -> Decimal | None:
    """The widest of the quantiles' intervals when the rows spread evenly over the candidates'
    range (most data are denser at their quantiles, so their intervals are narrower)."""
    grid = compiled.candidates
    if typical_rows is None or grid is None:
        return None
    g = compiled.template.granularity
    span = grid.last - grid.first
    widest = Decimal(0)
    for i, q in enumerate(compiled.template.quantiles):
        chosen, near = compiled.statistics[1 + 2 * i], compiled.statistics[2 + 2 * i]
        width = intervals.expected_quantile_width(
            typical_rows,
            span,
            step=grid.step,
            den=quantiles.score_ratio(q)[1],
            scale=scale_of(chosen),
            count_scale=scale_of(near),
            windows=2 * quantiles.WINDOW_STEPS,
            alpha=chosen.alpha,
        )
        found = Decimal(span) if width is None else Decimal(repr(width)).to_integral_value("ROUND_CEILING")
        widest = max(widest, found)
    return widest * g


def _release_quantiles(compiled: Plan, bins: Sequence[int] | npt.NDArray[np.int64]) -> dict[str, NoisyVector]:
    """Noisy coarse counts of every cell (one release); then per quantile and cell, a candidate
    chosen by report-noisy-min on the exact scores of the fine candidates that the coarse counts
    leave possible; then a noisy count of the rows near each chosen candidate. Sequential: each
    step's candidates or window depend on the released values before it only."""
    grid = compiled.candidates
    if grid is None:  # unreachable: a quantile plan always has its candidates
        raise InternalError("a quantile plan has no candidates (this is a bug)")
    fine = np.asarray(bins, dtype=np.int64).reshape(len(compiled.cells), grid.count)
    coarse = compiled.statistics[0]
    stride = quantiles.coarse_stride(grid.count)
    exact_coarse = quantiles.coarse_counts(fine, stride)
    located = privacy.add_noise(exact_coarse.ravel(), coarse.sensitivity, coarse.micro_epsilon)
    noisy = {coarse.name: NoisyVector(located.values, located.scale, 0)}
    per_cell = np.asarray(located.values, dtype=np.int64).reshape(exact_coarse.shape)
    for i, q in enumerate(compiled.template.quantiles):
        select, near = compiled.statistics[1 + 2 * i], compiled.statistics[2 + 2 * i]
        margin = quantiles.locate_margin(located.scale, exact_coarse.shape[1], q)
        firsts, searched = [], []
        for counts, coarse_noisy in zip(fine, per_cell, strict=True):
            first, last = quantiles.locate(coarse_noisy.tolist(), q, margin, stride, grid.count)
            firsts.append(first)
            searched.append(quantiles.scores(counts, q, first, last))
        picks = privacy.select_min_each(searched, select.sensitivity, select.micro_epsilon)
        chosen = [first + pick for first, pick in zip(firsts, picks, strict=True)]
        noisy[select.name] = NoisyVector(tuple(chosen), scale_of(select), 0)
        exact = [quantiles.window(counts, j)[0] for counts, j in zip(fine, chosen, strict=True)]
        released = privacy.add_noise(exact, near.sensitivity, near.micro_epsilon)
        noisy[near.name] = NoisyVector(released.values, released.scale, 0)
    return noisy


def release_noise(compiled: Plan, exact: Mapping[str, Sequence[int] | npt.NDArray[np.int64]]) -> dict[str, NoisyVector]:
    """Step 6's mechanisms on the exact statistics of a plan (not one choosing its groups)."""
    if compiled.template.measure is Measure.QUANTILE:
        return _release_quantiles(compiled, exact["bins"])
    noisy = {}
    for statistic in compiled.statistics:
        released = privacy.add_noise(exact[statistic.name], statistic.sensitivity, statistic.micro_epsilon)
        noisy[statistic.name] = NoisyVector(
            released.values, released.scale, privacy.half_width(released.scale, statistic.alpha)
        )
    return noisy
