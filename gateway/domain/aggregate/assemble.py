"""Post-processing of noisy statistics into the released rows.

Pure: no I/O, no OpenDP. Every input is a noisy vector the mechanism released or a public fact
of the plan, so nothing here costs privacy, and the shape of the rows never depends on the data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from gateway.domain.aggregate.plan import Plan, bin_labels, epsilon_text
from gateway.domain.aggregate.quantiles import WINDOW_STEPS, score_ratio
from gateway.domain.aggregate.templates import CONFIDENCE, Measure
from gateway.domain.intervals import QuantileNoise, RatioNoise, centre

__all__ = ["NoisyVector", "assemble", "assemble_selected"]


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
        draws = [
            QuantileNoise.draw(noisy[f"near_{i}"].scale, int(plan.key[:16], 16) + i)
            for i in range(len(template.quantiles))
        ]
        for c, cell in enumerate(plan.cells):
            for i, q in enumerate(template.quantiles):
                chosen, near = noisy[f"quantile_{i}"], noisy[f"near_{i}"]
                row = _quantile(plan, q, chosen.values[c], near.values[c], scale=chosen.scale, noise=draws[i])
                rows.append({"group": _group(plan, cell), "quantile": float(q), **row})
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


def _quantile(plan: Plan, q: Decimal, chosen: int, near: int, *, scale: float, noise: QuantileNoise) -> dict[str, Any]:
    """The chosen candidate, with the central 95% of where the truth lies given the mechanism's
    noise and the noisy count of rows near it (domain.intervals.QuantileNoise)."""
    g = plan.template.granularity
    grid = plan.candidates
    if grid is None:  # unreachable: a quantile plan always has its candidates
        raise ValueError("a quantile plan has no candidates (this is a bug)")
    _num, den = score_ratio(q)
    pick = grid.unit(chosen)
    bins = min(grid.count, chosen + WINDOW_STEPS) - max(0, chosen - WINDOW_STEPS)
    found = noise.interval(near, bins * grid.step, step=grid.step, den=den, scale=scale, alpha=1 - float(CONFIDENCE))
    if found is None:
        low, high = Decimal(grid.first) * g, Decimal(grid.last) * g
    else:
        # The ends are the simulated error's quantiles, rounded to the nearest whole unit (as the
        # truth is one): rounding outwards would cover every place in a step of few units.
        low = max(_quantize((pick + Decimal(repr(found[0]))) * g, g), Decimal(grid.first) * g)
        high = min(_quantize((pick + Decimal(repr(found[1]))) * g, g), Decimal(grid.last) * g)
    value = min(max(Decimal(pick) * g, low), high)
    width = high - low
    note = None
    if width * 4 > (grid.last - grid.first) * g:  # over a quarter of the range: say why, from released figures
        note = (
            f"about {max(near, 0)} rows lie within {_number(Decimal(WINDOW_STEPS * grid.step) * g)} of this"
            f" value (a noisy count); at epsilon {epsilon_text(plan.amount.micro_epsilon)} the 95% interval is"
            f" {_number(width)} wide"
        )
    return {"value": _number(value), "interval": [_number(low), _number(high)], "note": note}


def assemble_selected(plan: Plan, released: Mapping[tuple[str, ...], int], half_width: int) -> list[dict[str, Any]]:
    """The rows of a key-selected count: the groups that cleared the threshold, sorted by key."""
    return [
        {"group": dict(zip(plan.group_by, key, strict=True)), **_count(value, half_width)}
        for key, value in sorted(released.items())
    ]
