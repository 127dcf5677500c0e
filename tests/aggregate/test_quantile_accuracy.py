"""Quantiles: report-noisy-min over up to 4,001 candidates scored from one histogram, searched
only where noisy coarse counts leave the quantile possible, and 95% intervals simulated for that
mechanism that hold the true quantile 93-97% of the time."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from decimal import Decimal

import numpy as np
import yaml

from gateway import privacy
from gateway.domain import intervals
from gateway.domain.aggregate import AggregateTemplate, NoisyVector, Plan, assemble, plan, quantiles
from gateway.domain.catalog import CatalogEntry
from gateway.services.aggregate_noise import expected_interval_width, release_noise
from tests.aggregate.conftest import PAYROLL_ENTRY
from tests.aggregate.test_mean_accuracy import _outside_band

ENTRY = CatalogEntry.model_validate(yaml.safe_load(PAYROLL_ENTRY))


def _plan(quantile_levels: list[str], granularity: str = "0.01", epsilon: str = "1", **extra: object) -> Plan:
    template = AggregateTemplate.model_validate(
        {
            "title": "t",
            "dataset": "payroll",
            "measure": "quantile",
            "column": "amount",
            "granularity": granularity,
            "quantiles": quantile_levels,
            "group_by": ["region"],
            "epsilon": {"default": "1", "max": "5"},
            **extra,
        }
    )
    return plan("t", template, ENTRY, "v", {"group_by": ["region"]}, epsilon=epsilon)


def test_candidates_are_as_fine_as_the_bounds_allow_up_to_4001() -> None:
    fine = _plan(["0.5"]).candidates  # amount in [0, 100] at 0.01: 10,000 units
    assert fine is not None and (fine.first, fine.step, fine.count) == (0, 3, 3334)
    coarse = _plan(["0.5"], granularity="1").candidates  # 100 units: every one a candidate
    assert coarse is not None and (coarse.step, coarse.count) == (1, 101)
    narrowed = _plan(["0.5"], granularity="1", bins=[10, 20]).candidates  # only the first and last edge count
    assert narrowed is not None and (narrowed.first, narrowed.last) == (10, 20)


def test_the_engine_reads_the_candidates_grid_that_their_edges_make() -> None:
    """The engine bins a quantile by its candidates' (first, step) without checking its edges:
    they are the grid `regular_grid` finds in the edges, for every shape of bounds."""
    from gateway.engine import regular_grid

    shapes = [
        {},
        {"granularity": "1"},
        {"granularity": "1", "bins": [10, 20]},
        {"granularity": "0.5", "bins": [3, 97]},
        {"granularity": "7"},
        {"granularity": "0.01", "bins": [0.37, 99.99]},
    ]
    for extra in shapes:
        compiled = _plan(["0.5"], **extra)
        grid = compiled.candidates
        assert grid is not None
        assert regular_grid(compiled.edges, compiled.template.granularity) == (grid.first, grid.step), extra


def test_scores_are_opendps_quantile_scores() -> None:
    """|(den - num) #(x < c) - num #(x >= c)|, from the counts of [c_i, c_i+1)."""
    counts = [3, 0, 5, 1, 1]
    assert quantiles.scores(counts, Decimal("0.5")).tolist() == [10, 4, 4, 6, 8]
    assert quantiles.scores(counts, Decimal("0.25")).tolist() == [10, 2, 2, 22, 26]  # 3 * lt - 1 * ge
    assert quantiles.scores(counts, Decimal("0.25"), 1, 3).tolist() == [2, 2, 22]  # a window of them


def test_the_epsilon_is_shared_exactly_and_the_shapes_are_fixed() -> None:
    compiled = _plan(["0.25", "0.5", "0.9"], epsilon="1")
    assert sum(s.micro_epsilon for s in compiled.statistics) == compiled.amount.micro_epsilon
    assert [s.name for s in compiled.statistics] == [
        "coarse", "quantile_0", "near_0", "quantile_1", "near_1", "quantile_2", "near_2"
    ]  # fmt: skip
    assert compiled.statistics[0].micro_epsilon == 200_000  # the coarse counts, once for all quantiles
    assert [s.sensitivity for s in compiled.statistics[1::2]] == [3 * 3, 3 * 1, 3 * 9]  # max_rows 3


def test_the_charge_is_what_opendps_maps_say() -> None:
    """Each statistic's scale is calibrated so that OpenDP's own privacy map, at the statistic's
    sensitivity, gives its share (within float rounding, never above), and the shares sum to the
    charge: the accounting of the coarse counts, the selections and the window counts is exact."""
    for levels, epsilon in ((["0.5"], "1"), (["0.1", "0.5", "0.99"], "0.3"), (["0.5"], "0.000003")):
        compiled = _plan(levels, epsilon=epsilon)
        spent = Decimal(0)
        for statistic in compiled.statistics:
            share = Decimal(statistic.micro_epsilon) / 1_000_000
            if statistic.mechanism == "noisy_min":
                scale = privacy.calibrate_selection(statistic.sensitivity, statistic.micro_epsilon)
                mapped = Decimal(privacy._selector(scale).map(statistic.sensitivity))
            else:
                scale = privacy.calibrate(statistic.sensitivity, statistic.micro_epsilon)
                mapped = Decimal(privacy._mechanism(scale).map(statistic.sensitivity))
            assert share * (1 - Decimal("1e-9")) <= mapped <= share, (statistic, mapped)
            spent += share
        assert spent == compiled.amount.epsilon


def _coarse_errors(rng: np.random.Generator, scale: float, bins: int, q: float, cells: int) -> np.ndarray:
    """Per simulated cell, the largest |noisy - exact| of #(x < e) - q #(all) over its coarse edges."""
    noise = intervals.discrete_laplace(rng, scale, cells * bins).reshape(cells, bins)
    below = np.concatenate((np.zeros((cells, 1)), np.cumsum(noise, axis=1)), axis=1)
    return np.abs(below - q * below[:, -1:]).max(axis=1)


def test_the_coarse_margin_holds_as_often_as_it_says() -> None:
    """Over 4,000 simulated cells the noise leaves a margin computed for a 5% failure no more than
    5% of the time (it is a Chernoff and union bound, so in fact far less), and the margin is not
    wastefully loose: under three times the noise's own 95th percentile."""
    rng = np.random.default_rng(11)
    for scale, bins, q in ((25.0, 32, "0.5"), (3.0, 32, "0.9"), (250.0, 8, "0.25")):
        errors = _coarse_errors(rng, scale, bins, float(q), 4_000)
        margin = quantiles.locate_margin(scale, bins, Decimal(q), 0.05)
        assert np.mean(errors > margin) <= 0.05
        assert margin < 3 * np.quantile(errors, 0.95), (margin, np.quantile(errors, 0.95))
    assert quantiles.locate_margin(25.0, 32, Decimal("0.5")) > quantiles.locate_margin(25.0, 32, Decimal("0.5"), 0.05)


def test_the_searched_candidates_hold_the_best_whenever_the_noise_stays_within_the_margin() -> None:
    """Noise on the coarse counts as large as the margin allows (each count off by up to
    margin / bins, so every edge's error is within it) never leaves the exact best candidate out;
    without noise the search spans at most two coarse bins."""
    rng = np.random.default_rng(5)
    count, margin = 2_001, 400
    stride = quantiles.coarse_stride(count)
    for trial in range(300):
        counts = rng.poisson(rng.uniform(0.05, 40), count) * (rng.random(count) < rng.uniform(0.2, 1))
        q = Decimal(str(rng.choice(["0.01", "0.25", "0.5", "0.9", "0.999"])))
        exact = quantiles.coarse_counts(counts[None, :], stride)[0]
        best = set(np.flatnonzero(quantiles.scores(counts, q) == quantiles.scores(counts, q).min()).tolist())
        bound = margin // len(exact)
        noisy = exact + rng.integers(-bound, bound + 1, len(exact))
        first, last = quantiles.locate(noisy.tolist(), q, margin, stride, count)
        assert any(first <= b <= last for b in best), (trial, first, last, best)
        first, last = quantiles.locate(exact.tolist(), q, 0, stride, count)
        assert last - first <= 2 * stride and any(first <= b <= last for b in best)


def test_opendps_selection_is_the_noise_the_interval_simulates() -> None:
    """The interval models report-noisy-min as argmin(score - scale * Exp(1)): OpenDP's picks
    follow the same frequencies (within five standard errors over 3,000 picks)."""
    scores = [40, 12, 0, 9, 30]
    scale = privacy.calibrate_selection(3, 1_000_000)
    vector = np.asarray(scores, dtype=np.uint64)
    picks = Counter(privacy.select_min(vector, 3, 1_000_000) for _ in range(3_000))
    rng = np.random.default_rng(7)
    model = np.argmin(np.array(scores) - scale * rng.exponential(1.0, (200_000, len(scores))), axis=1)
    for index in range(len(scores)):
        p = float(np.mean(model == index))
        assert abs(picks[index] / 3_000 - p) <= 5 * math.sqrt(p * (1 - p) / 3_000) + 1e-3, (index, picks, p)


CELLS = 4
TRIALS = 500
# 500 releases x 4 cells x 2 quantiles = 4,000 intervals: if the true coverage is anywhere in
# [0.945, 0.955], a false failure of the 93-97% band has probability below one in ten thousand.


def test_quantile_intervals_cover_93_to_97_percent() -> None:
    """Synthetic cells of 1,000 to 20,000 rows, normal values of varied spread, so the mechanism
    runs both where its noise spans many candidates (a few rows between two) and where it picks
    the nearest (hundreds of rows between two); each
    release has its own plan key (so its own simulation draws), the selection is OpenDP's."""
    assert _outside_band(CELLS * TRIALS * 2, 0.945) < 1e-4 and _outside_band(CELLS * TRIALS * 2, 0.955) < 1e-4
    base = _plan(["0.5", "0.9"], granularity="0.001")  # a step of 50 units: a truth anywhere in it
    grid = base.candidates
    assert grid is not None
    rng = np.random.default_rng(2026)
    covered = total = 0
    for trial in range(TRIALS):
        compiled = dataclasses.replace(base, key=f"{trial:064x}")
        bins: list[int] = []
        truths = []
        for _cell in range(CELLS):
            n = int(rng.integers(1_000, 20_000))
            units = np.clip(np.round(rng.normal(rng.uniform(20, 80), rng.uniform(2, 10), n) * 1000), 0, 100_000)
            index = np.clip((units.astype(np.int64) - grid.first) // grid.step, 0, grid.count - 1)
            bins += [int(c) for c in np.bincount(index, minlength=grid.count)]
            ordered = np.sort(units)
            truths.append([ordered[math.ceil(q * n) - 1] / 1000 for q in (0.5, 0.9)])  # DuckDB's quantile_disc
        rows = assemble(compiled, release_noise(compiled, {"bins": bins}))
        for row, truth in zip(rows, [t for cell in truths for t in cell], strict=True):
            covered += row["interval"][0] <= truth <= row["interval"][1]
            total += 1
    assert 0.93 <= covered / total <= 0.97, covered / total


def test_a_preview_gives_a_quantile_width_that_shrinks_with_rows_and_epsilon() -> None:
    compiled = _plan(["0.5"])
    few, many = expected_interval_width(compiled, 5_000), expected_interval_width(compiled, 50_000)
    assert few is not None and many is not None and many < few
    richer = expected_interval_width(_plan(["0.5"], epsilon="5"), 5_000)
    assert richer is not None and richer < few
    assert expected_interval_width(compiled, None) is None


def test_an_empty_cell_gives_the_whole_range_and_says_why() -> None:
    compiled = _plan(["0.5"])
    grid = compiled.candidates
    assert grid is not None
    noisy = {
        "quantile_0": NoisyVector((1000,) * CELLS, 6.0, 0),
        "near_0": NoisyVector((0, -3, 0, -1), 30.0, 0),
    }
    assert grid.last == 9_999  # hundredths: the whole candidate range is [0, 99.99]
    for row in assemble(compiled, noisy):
        assert row["interval"] == [0, 99.99]
        assert "95% interval is 99.99 wide" in row["note"]
