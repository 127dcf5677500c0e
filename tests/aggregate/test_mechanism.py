"""The noise: calibrated to the charge by OpenDP's own map, distributed as stated, and intervals
that cover the true value as often as they claim."""

from __future__ import annotations

import math
import multiprocessing
from collections import Counter
from decimal import Decimal

import numpy as np
import opendp.prelude as dp
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import privacy
from gateway.domain.aggregate import AggregateTemplate, NoisyVector, assemble, plan
from gateway.domain.catalog import CatalogEntry
from gateway.errors import InternalError
from tests.aggregate.conftest import PAYROLL_ENTRY
from tests.aggregate.test_mean_accuracy import _outside_band

ENTRY = CatalogEntry.model_validate(yaml.safe_load(PAYROLL_ENTRY))


def _template(**fields: object) -> AggregateTemplate:
    base: dict[str, object] = {
        "title": "t",
        "dataset": "payroll",
        "group_by": ["region"],
        "epsilon": {"default": "1", "max": "5"},
    }
    return AggregateTemplate.model_validate({**base, **fields})


@given(sensitivity=st.integers(1, 10**7), micro=st.integers(1, 10**7))
@settings(max_examples=150, deadline=None)
def test_calibration_never_costs_more_than_the_charge(sensitivity: int, micro: int) -> None:
    scale = privacy.calibrate(sensitivity, micro)
    mechanism = privacy._mechanism(scale)
    assert Decimal(mechanism.map(sensitivity)) <= Decimal(micro) / 1_000_000
    # and it is not wastefully loose: a scale one part in 10^9 smaller would be within a hair
    assert scale <= sensitivity / (micro / 1_000_000) * (1 + 1e-9)


def test_the_rounding_trap_is_handled() -> None:
    # 36 / 0.3 in floats gives a map of 0.30000000000000004 > 0.3: the scale must be nudged up.
    scale = privacy.calibrate(36, 300_000)
    assert Decimal(privacy._mechanism(scale).map(36)) <= Decimal("0.3")
    assert scale > 120.0


def test_calibration_refuses_nonsense() -> None:
    with pytest.raises(InternalError):
        privacy.calibrate(0, 1)
    with pytest.raises(InternalError):
        privacy.calibrate(1, 0)


@pytest.mark.parametrize("scale", [0.3, 1.0, 2.0, 7.5, 72.0, 1e4, 2.88e6])
@pytest.mark.parametrize("alpha", [0.05, 0.025, 0.05 / 30])
def test_half_width_is_the_smallest_that_covers(scale: float, alpha: float) -> None:
    k = privacy.half_width(scale, alpha)
    assert privacy.tail(scale, k) <= alpha
    assert k == 0 or privacy.tail(scale, k - 1) > alpha
    # OpenDP's own accuracy figure (P[|X| >= a] <= alpha) agrees to within one unit
    assert abs(k - dp.discrete_laplacian_scale_to_accuracy(scale, alpha)) <= 1


def _pmf(scale: float, k: int) -> float:
    r = math.exp(-1 / scale)
    return (1 - r) / (1 + r) * r ** abs(k)


@pytest.mark.parametrize("scale", [1.5, 4.0])
def test_noise_follows_the_stated_distribution(scale: float) -> None:
    """Chi-square goodness of fit of 40,000 draws against the discrete Laplace pmf."""
    draws = 40_000
    noisy = privacy.add_noise([0] * draws, 1, round(1_000_000 / scale))
    stated = noisy.scale
    counts = Counter(noisy.values)
    edge = privacy.half_width(stated, 0.01)
    chi2 = 0.0
    cells = 0
    for k in range(-edge, edge + 1):
        expected = draws * _pmf(stated, k)
        chi2 += (counts.get(k, 0) - expected) ** 2 / expected
        cells += 1
    tails = sum(c for k, c in counts.items() if abs(k) > edge)
    expected_tails = draws * privacy.tail(stated, edge)
    chi2 += (tails - expected_tails) ** 2 / expected_tails
    dof = cells  # cells + 1 bins, minus one constraint
    # The 99.99% quantile of chi-square is below dof + 4.3 * sqrt(2 dof) + 12 for these dof.
    assert chi2 < dof + 4.3 * math.sqrt(2 * dof) + 12, chi2
    mean = sum(noisy.values) / draws
    variance = sum(v * v for v in noisy.values) / draws - mean**2
    r = math.exp(-1 / stated)
    assert abs(variance / (2 * r / (1 - r) ** 2) - 1) < 0.06
    assert abs(mean) < 6 * math.sqrt(2 * r / (1 - r) ** 2 / draws)


def _coverage(template: AggregateTemplate, truth: dict[str, list[int]], epsilon: str, trials: int) -> tuple[int, int]:
    compiled = plan("t", template, ENTRY, "v", {"group_by": ["region"]}, epsilon=epsilon)
    covered = total = 0
    exact_rows = assemble(compiled, {s.name: NoisyVector(tuple(truth[s.name]), 1.0, 0) for s in compiled.statistics})
    for _ in range(trials):
        noisy = {}
        for statistic in compiled.statistics:
            released = privacy.add_noise(truth[statistic.name], statistic.sensitivity, statistic.micro_epsilon)
            noisy[statistic.name] = NoisyVector(
                released.values, released.scale, privacy.half_width(released.scale, statistic.alpha)
            )
        for row, exact in zip(assemble(compiled, noisy), exact_rows, strict=True):
            low, high = row["interval"]
            covered += low <= exact["value"] <= high
            total += 1
    return covered, total


# 10,000 intervals each. A count's or sum's interval covers exactly 1 - P(|noise| > half-width),
# known in closed form (a discrete interval cannot stop at exactly 95%); each test checks that
# this true coverage is one for which a false failure of the 93-97% band has probability below
# one in ten thousand (exactly, by the binomial), then measures it.


def _true_coverage(template: AggregateTemplate, epsilon: str) -> float:
    compiled = plan("t", template, ENTRY, "v", {"group_by": ["region"]}, epsilon=epsilon)
    (statistic,) = compiled.statistics
    scale = privacy.calibrate(statistic.sensitivity, statistic.micro_epsilon)
    return 1 - privacy.tail(scale, privacy.half_width(scale, statistic.alpha))


def test_count_intervals_cover_about_95_percent() -> None:
    template = _template(measure="count")
    assert _outside_band(10_000, _true_coverage(template, "0.5")) < 1e-4
    covered, total = _coverage(template, {"rows": [400, 3, 0, 1200]}, "0.5", 2500)
    assert 0.93 <= covered / total <= 0.97, covered / total


def test_sum_intervals_cover_about_95_percent() -> None:
    template = _template(measure="sum", column="amount", granularity="0.5")
    assert _outside_band(10_000, _true_coverage(template, "2")) < 1e-4
    truth = {"sum": [4000, 0, 120, 99999]}  # in units of the granularity (0.5)
    covered, total = _coverage(template, truth, "2", 2500)
    assert 0.93 <= covered / total <= 0.97, covered / total


def test_a_numpy_vector_gets_the_same_noise_as_a_list() -> None:
    """The vector path skips the per-value clamp only for what cannot overflow: int64 arrays.
    Both paths release through the same calibrated mechanism (same scale, same spread)."""
    as_list = privacy.add_noise([0] * 20_000, 1, 500_000)
    as_array = privacy.add_noise(np.zeros(20_000, dtype=np.int64), 1, 500_000)
    assert as_list.scale == as_array.scale == privacy.calibrate(1, 500_000)
    spreads = [sum(abs(v) for v in noised.values) / 20_000 for noised in (as_list, as_array)]
    assert abs(spreads[0] / spreads[1] - 1) < 0.1
    with pytest.raises(InternalError):
        privacy.add_noise(np.zeros(3, dtype=np.float64), 1, 500_000)  # type: ignore[arg-type]
    with pytest.raises(InternalError):
        privacy.add_noise(np.zeros((2, 2), dtype=np.int64), 1, 500_000)


def test_selections_side_by_side_come_back_in_their_cells_order() -> None:
    """select_min_each runs cells on several threads: each answer must be its own cell's. Each
    cell's lowest score is far below the rest (a million times the scale), so its pick is sure."""
    cells = []
    for best in [7, 0, 63, 31, 2, 50, 5, 40] * 4:
        scores = np.full(64, 10**12, dtype=np.uint64)
        scores[best] = 0
        cells.append(scores)
    picks = privacy.select_min_each(cells, 1, 1_000_000)
    assert picks == [int(np.argmin(c)) for c in cells]


def test_a_long_vector_drawn_in_parts_keeps_each_value_in_its_place() -> None:
    """Drawn on several threads, each part's noise lands on its own values: with a tiny scale
    (epsilon 10 on sensitivity 1) the noise is mostly zero, so the values come back in order."""
    values = list(range(0, 50_000, 7))
    noised = privacy.add_noise(values, 1, 10_000_000)
    assert len(noised.values) == len(values)
    assert sum(abs(a - b) for a, b in zip(noised.values, values, strict=True)) < len(values) // 50


def test_a_forked_process_draws_on_its_own_threads() -> None:
    """The parent's pool has threads only in the parent: a child forked after it drew (a server
    worker, a job worker's helper) must get its own pool, not wait forever on the parent's."""
    privacy.add_noise([0] * 1000, 1, 1_000_000)  # the parent's pool now has threads
    context = multiprocessing.get_context("fork")
    child = context.Process(target=privacy.add_noise, args=([0] * 1000, 1, 1_000_000))
    child.start()
    child.join(timeout=30)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive and child.exitcode == 0


def test_a_sum_past_64_bits_is_clamped_not_refused_after_the_data_were_read() -> None:
    """A refusal here came after the read and told, without noise, whether a chosen subset's sum
    passed 2^63; clamped, it is released like any other (the clamp keeps the sensitivity), and
    the noisy value is kept within JSON's exact integers (post-processing)."""
    top = 2**63 - 1
    released = privacy.add_noise([top + 12_345, -(top + 6), 7], sensitivity=1, micro_epsilon=1_000_000)
    assert len(released.values) == 3
    # released at the largest integer JSON carries exactly, so the signed result can hold it
    assert released.values[:2] == (2**53 - 1, -(2**53 - 1))
    assert abs(released.values[2] - 7) < 10_000
    from gateway.domain.canonical_json import canonical_text

    assert canonical_text(list(released.values))
