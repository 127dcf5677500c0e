"""Quantiles: report-noisy-min over up to 2,001 candidates scored from one histogram, and 95%
intervals simulated for that mechanism that hold the true quantile 93-97% of the time."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from decimal import Decimal

import numpy as np
import yaml

from gateway import privacy
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


def test_candidates_are_as_fine_as_the_bounds_allow_up_to_2001() -> None:
    fine = _plan(["0.5"]).candidates  # amount in [0, 100] at 0.01: 10,000 units
    assert fine is not None and (fine.first, fine.step, fine.count) == (0, 5, 2001)
    coarse = _plan(["0.5"], granularity="1").candidates  # 100 units: every one a candidate
    assert coarse is not None and (coarse.step, coarse.count) == (1, 101)
    narrowed = _plan(["0.5"], granularity="1", bins=[10, 20]).candidates  # only the first and last edge count
    assert narrowed is not None and (narrowed.first, narrowed.last) == (10, 20)


def test_scores_are_opendps_quantile_scores() -> None:
    """|(den - num) #(x < c) - num #(x >= c)|, from the counts of [c_i, c_i+1)."""
    counts = [3, 0, 5, 1, 1]
    assert quantiles.scores(counts, Decimal("0.5")) == [10, 4, 4, 6, 8]
    assert quantiles.scores(counts, Decimal("0.25")) == [10, 2, 2, 22, 26]  # 3 * lt - 1 * ge


def test_the_epsilon_is_shared_exactly_and_the_shapes_are_fixed() -> None:
    compiled = _plan(["0.25", "0.5", "0.9"], epsilon="1")
    assert sum(s.micro_epsilon for s in compiled.statistics) == compiled.amount.micro_epsilon
    assert [s.name for s in compiled.statistics] == [
        "quantile_0", "near_0", "quantile_1", "near_1", "quantile_2", "near_2"
    ]  # fmt: skip
    assert [s.sensitivity for s in compiled.statistics[::2]] == [3 * 3, 3 * 1, 3 * 9]  # max_rows 3


def test_opendps_selection_is_the_noise_the_interval_simulates() -> None:
    """The interval models report-noisy-min as argmin(score - scale * Exp(1)): OpenDP's picks
    follow the same frequencies (within five standard errors over 3,000 picks)."""
    scores = [40, 12, 0, 9, 30]
    scale = privacy.calibrate_selection(3, 1_000_000)
    picks = Counter(privacy.select_min(scores, 3, 1_000_000) for _ in range(3_000))
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
    for row in assemble(compiled, noisy):
        assert row["interval"] == [0, 100]
        assert "95% interval is 100 wide" in row["note"]
