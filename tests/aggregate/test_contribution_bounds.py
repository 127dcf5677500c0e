"""Contribution bounds and clamping hold against hostile data, so the sensitivities are exact.

The noise is calibrated to a sensitivity: how far one privacy unit can move a statistic. These
tests attack that number directly. They write version files that hold whatever an attacker
could wish for (a unit with thousands of rows, values far outside the bounds, NaN, infinities,
NULL), skipping the registration checks that would refuse most of it, and check that adding or
removing any one unit moves each exact statistic by at most its stated L1 sensitivity.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.domain.aggregate import AggregateTemplate, Plan, plan, quantiles
from gateway.domain.catalog import CatalogEntry
from gateway.engine import Domain, version_path
from gateway.engine.snapshot import ColumnFacts, Snapshot, VersionFacts
from gateway.errors import DependencyError
from tests.aggregate.conftest import HOSTILE_ROWS, PAYROLL_ENTRY, register_payroll
from tests.conftest import CANARY, Installation

ENTRY = CatalogEntry.model_validate(yaml.safe_load(PAYROLL_ENTRY))
MAX_ROWS = ENTRY.privacy_unit.max_rows
TEMPLATES = {
    "count": {"measure": "count"},
    "count_units": {"measure": "count_units"},
    "sum": {"measure": "sum", "column": "amount", "granularity": "0.5"},
    "sum_signed": {"measure": "sum", "column": "score"},
    "mean": {"measure": "mean", "column": "score"},
    "histogram": {"measure": "histogram", "column": "amount", "bins": [0, 25, 50, 75, 100]},
    "quantile": {"measure": "quantile", "column": "amount", "bins": [0, 50, 100], "quantiles": ["0.5"]},
}
HOSTILE_FLOATS = [math.nan, math.inf, -math.inf, 1e300, -1e300, 100.0000001, -0.0001, None]
HOSTILE_INTS = [10**15, -(10**15), 51, -51, 0]


def _plan(kind: str, group_by: list[str]) -> Plan:
    template = AggregateTemplate.model_validate(
        {
            "title": "t",
            "dataset": "payroll",
            "group_by": ["region"],
            "epsilon": {"default": "1", "max": "5"},
            **TEMPLATES[kind],
        }
    )
    return plan(kind, template, ENTRY, "v", {"group_by": group_by}, epsilon="1")


def _write_version(data_dir: Path, version: str, rows: list[tuple[Any, ...]]) -> None:
    path = version_path(data_dir, "payroll", version)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE records (person VARCHAR, note VARCHAR, region VARCHAR, amount DOUBLE, score BIGINT)")
    if rows:
        con.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?)", rows)
    con.close()


unit_rows = st.lists(
    st.tuples(
        st.sampled_from(["north", "south", "east", "west", "nowhere", None]),
        st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(HOSTILE_FLOATS)),
        st.one_of(st.integers(-(10**12), 10**12), st.sampled_from(HOSTILE_INTS)),
    ),
    min_size=1,
    max_size=MAX_ROWS,
)


@given(others=st.lists(unit_rows, max_size=6), target=unit_rows, group=st.sampled_from([[], ["region"]]))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_one_unit_moves_each_statistic_by_at_most_its_sensitivity(
    tmp_path: Path, others: list[list[tuple[Any, ...]]], target: list[tuple[Any, ...]], group: list[str]
) -> None:
    def rows(units: list[list[tuple[Any, ...]]]) -> list[tuple[Any, ...]]:
        return [
            (f"U{i}", None, region, amount, score) for i, unit in enumerate(units) for region, amount, score in unit
        ]

    data_dir = tmp_path / f"d{len(list(tmp_path.iterdir()))}"
    _write_version(data_dir, "with", rows([*others, target]))
    _write_version(data_dir, "without", rows(others))
    domain = Domain(data_dir, threads=1)
    try:
        for kind in TEMPLATES:
            compiled = _plan(kind, group)
            with domain.snapshot("payroll", "with") as snap:
                with_unit = snap.aggregate(compiled)
            with domain.snapshot("payroll", "without") as snap:
                without_unit = snap.aggregate(compiled)
            if compiled.candidates is not None:  # a quantile: scores (L-inf per cell) and bins (L1)
                _check_quantile(compiled, list(with_unit["bins"]), list(without_unit["bins"]))
                continue
            for statistic in compiled.statistics:
                moved = sum(
                    abs(a - b) for a, b in zip(with_unit[statistic.name], without_unit[statistic.name], strict=True)
                )
                assert moved <= statistic.sensitivity, (kind, statistic, moved)
    finally:
        domain.close()


def _check_quantile(compiled: Plan, with_unit: list[int], without_unit: list[int]) -> None:
    """Summed over the cells, the largest move of a candidate's score stays within the selection's
    sensitivity (each cell's selection costs in proportion); the bin counts any window count
    sums move by at most `max_rows` in total, and so do the coarse counts (L1 over all cells)."""
    grid = compiled.candidates
    assert grid is not None
    assert sum(abs(a - b) for a, b in zip(with_unit, without_unit, strict=True)) <= compiled.max_rows
    coarse = compiled.statistics[0]
    stride = quantiles.coarse_stride(grid.count)
    shape = (len(compiled.cells), grid.count)
    before_coarse = quantiles.coarse_counts(np.asarray(with_unit).reshape(shape), stride)
    after_coarse = quantiles.coarse_counts(np.asarray(without_unit).reshape(shape), stride)
    assert coarse.name == "coarse" and int(np.abs(before_coarse - after_coarse).sum()) <= coarse.sensitivity
    for i, q in enumerate(compiled.template.quantiles):
        select, near = compiled.statistics[1 + 2 * i], compiled.statistics[2 + 2 * i]
        assert near.sensitivity == compiled.max_rows
        moved = 0
        for c in range(len(compiled.cells)):
            cell = slice(c * grid.count, (c + 1) * grid.count)
            before, after = quantiles.scores(with_unit[cell], q), quantiles.scores(without_unit[cell], q)
            moved += int(np.abs(before.astype(np.int64) - after.astype(np.int64)).max())
        assert moved <= select.sensitivity, (select, moved)


def test_clamping_and_missing_values_are_exact(tmp_path: Path) -> None:
    rows = [
        ("A", None, "north", math.nan, 0),
        ("B", None, "north", math.inf, 10**15),
        ("C", None, "north", -math.inf, -(10**15)),
        ("D", None, "north", None, 7),
        ("E", None, "north", 1e300, 3),
        ("F", None, "south", 40.25, -3),
        ("G", None, "nowhere", 50.0, 1),  # not a public category: in no cell
    ]
    _write_version(tmp_path, "v", rows)
    domain = Domain(tmp_path, threads=1)
    try:
        with domain.snapshot("payroll", "v") as snap:
            sums = snap.aggregate(_plan("sum", ["region"]))
            means = snap.aggregate(_plan("mean", ["region"]))
            counts = snap.aggregate(_plan("count", ["region"]))
            histogram = snap.aggregate(_plan("histogram", ["region"]))
    finally:
        domain.close()
    # amount in [0, 100], granularity 0.5: NaN and NULL are missing, +inf and 1e300 clamp to 100
    # (200 units), -inf to 0; 40.25 is 80.5 units, rounded half away from zero to 81.
    assert sums["sum"] == [400, 81, 0, 0]
    # score in [-50, 50] (centre 0): 10^15 clamps to 50, -10^15 to -50
    assert means["centred_sum"] == [0 + 50 - 50 + 7 + 3, -3, 0, 0]
    assert means["values"] == [5, 1, 0, 0]
    assert counts["rows"] == [5, 1, 0, 0]
    # bins [0,25) [25,50) [50,75) [75,100]: three values of north have a value, clamped
    assert list(histogram["bins"]) == [1, 0, 0, 2] + [0, 1, 0, 0] + [0] * 8


def test_registration_bounds_the_unit_with_thousands_of_rows(installation: Installation) -> None:
    register_payroll(installation)
    record = _record(installation)
    assert record.rows_dropped_by_contribution_bound == HOSTILE_ROWS - MAX_ROWS
    domain = Domain(installation.settings.data_path, threads=1)
    try:
        assert len(domain.find("payroll", record.version, "person", CANARY, ["region"])) == MAX_ROWS
        with domain.snapshot("payroll", record.version) as snap:
            counts = snap.aggregate(_plan("count", []))
        assert counts["rows"] == [sum(1 + p % 3 for p in range(20)) + MAX_ROWS]
    finally:
        domain.close()


def _record(installation: Installation) -> Any:
    from gateway.catalog import CatalogStore

    return CatalogStore(installation.settings.data_path).get("payroll")


@pytest.mark.parametrize("kind", list(TEMPLATES))
def test_sensitivities_follow_the_registered_bound(kind: str) -> None:
    compiled = _plan(kind, ["region"])
    names = {s.name: s.sensitivity for s in compiled.statistics}
    expected = {
        "count": {"rows": MAX_ROWS},
        "count_units": {"units": min(MAX_ROWS, 4)},
        "sum": {"sum": MAX_ROWS * 200},
        "sum_signed": {"sum": MAX_ROWS * 50},
        "mean": {"centred_sum": MAX_ROWS * 50, "values": MAX_ROWS},
        "histogram": {"bins": MAX_ROWS},
        "quantile": {"coarse": MAX_ROWS, "quantile_0": MAX_ROWS, "near_0": MAX_ROWS},  # median: scores move by 1 a row
    }[kind]
    assert names == expected
    assert sum(s.micro_epsilon for s in compiled.statistics) == compiled.amount.micro_epsilon


def test_every_cell_is_planned_whatever_the_data() -> None:
    compiled = _plan("count", ["region"])
    assert compiled.cells == tuple((r,) for r in ("north", "south", "east", "west"))
    assert list(itertools.chain.from_iterable(compiled.cells)) == list(ENTRY.column("region").categories or ())


clean_rows = st.lists(
    st.tuples(
        st.sampled_from(["north", "south", "east", "west"]),
        st.one_of(st.none(), st.floats(0, 100)),
        st.integers(-50, 50),
    ),
    max_size=40,
)


@given(rows=clean_rows)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_unclamped_scan_of_a_checked_version_equals_the_clamped_one(
    tmp_path: Path, rows: list[tuple[Any, ...]]
) -> None:
    """A version whose values were checked to lie in the bounds is summed without clamping; the
    answer is the one clamping would give, and a version with one value out of bounds is clamped."""
    from gateway.engine.plan_sql import aggregate_sql as _aggregate_sql

    data_dir = tmp_path / f"c{len(list(tmp_path.iterdir()))}"
    records = [(f"U{i // 3}", None, region, amount, score) for i, (region, amount, score) in enumerate(rows)]
    _write_version(data_dir, "clean", records)
    _write_version(data_dir, "dirty", [*records, ("X", None, "north", 100.5, 51)])
    con = duckdb.connect(str(version_path(data_dir, "payroll", "clean")), read_only=True)
    try:
        for kind in TEMPLATES:
            compiled = _plan(kind, ["region"])
            fast = con.execute(*_aggregate_sql(compiled, True, kind in ("sum_signed", "mean"))).fetchall()
            slow = con.execute(*_aggregate_sql(compiled)).fetchall()
            assert sorted(fast, key=repr) == sorted(slow, key=repr), kind
    finally:
        con.close()
    domain = Domain(data_dir, threads=1)
    try:
        for version, expected in (("clean", True), ("dirty", False)):
            with domain.snapshot("payroll", version) as snap:
                assert snap._checked_values(_plan("mean", []))[0] is expected
                assert snap._checked_values(_plan("mean", [])) == (expected, True)
                assert snap._checked_values(_plan("sum", []))[1] is False  # amount is a float column
    finally:
        domain.close()


class _NoQueries:
    def execute(self, *_args: Any) -> Any:
        raise AssertionError("a release read the data to decide how to clamp")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (None, {"sum": (True, False), "mean": (True, True)}),
        (("X", None, "north", math.nan, 3), {"sum": (False, False), "mean": (True, True)}),
        (("X", None, "north", 7.0, 51), {"sum": (True, False), "mean": (False, True)}),
        (("X", None, "north", math.inf, -51), {"sum": (False, False), "mean": (False, True)}),
    ],
)
def test_a_versions_value_checks_are_read_when_it_opens_not_per_column(
    tmp_path: Path, extra: tuple[Any, ...] | None, expected: dict[str, tuple[bool, bool]]
) -> None:
    """SECURITY: a column checked on its first aggregate made that release slower, which told
    whether anyone had asked about the column on this process since it started. Every numeric
    column is read when the version opens, whatever opened it (a lookup here), and a release then
    decides how to clamp without touching the data; the outcome is the one the values call for."""
    rows = [("A", None, "north", 10.0, 5), ("B", None, "south", None, None), ("C", None, "east", 99.5, -50)]
    _write_version(tmp_path, "v", [*rows, *([extra] if extra else [])])
    domain = Domain(tmp_path, threads=1)
    try:
        with domain.snapshot("payroll", "v") as snap:  # its first use: the facts leave no result open
            assert snap.export(tmp_path / "out.parquet", ["region"]) == len(rows) + bool(extra)
            assert snap.lookup("person", "A", ["region"]) == [("north",)]
        with domain.snapshot("payroll", "v") as snap:
            snap._cursor = _NoQueries()  # type: ignore[assignment]
            assert {kind: snap._checked_values(_plan(kind, [])) for kind in expected} == expected
    finally:
        domain.close()


@pytest.mark.parametrize(
    "made",
    [
        # a view computes its values at each read: in bounds when the facts are read, not later
        "CREATE TABLE stored (person VARCHAR, score BIGINT); CREATE VIEW records AS"
        " SELECT person, NULL AS note, 'north' AS region, 1.0 AS amount, score * (epoch(now()) > 0)::BIGINT AS score"
        " FROM stored",
        "CREATE TABLE records (person VARCHAR, note VARCHAR, region VARCHAR, amount DOUBLE,"
        " score BIGINT GENERATED ALWAYS AS (CAST(random() * 2000000000 AS BIGINT)) VIRTUAL)",
        # another schema's table of the same name would describe other column types
        "CREATE TABLE records (person VARCHAR, note VARCHAR, region VARCHAR, amount DOUBLE, score BIGINT);"
        " CREATE SCHEMA other; CREATE TABLE other.records (amount BIGINT)",
        # a key table that is a view would name other rows at each read
        "CREATE TABLE records (person VARCHAR, note VARCHAR, region VARCHAR, amount DOUBLE, score BIGINT);"
        " CREATE VIEW _index_person AS SELECT hash(person) AS h, CAST(random() * 10 AS BIGINT) AS r FROM records",
    ],
)
def test_a_version_that_is_not_one_plain_table_is_not_served(tmp_path: Path, made: str) -> None:
    """SECURITY: how a release clamps is decided from facts read once; values that can change
    between reads (a view, a generated column) or a table described by another one of its name
    would let a sum go unclamped."""
    path = version_path(tmp_path, "payroll", "v")
    path.parent.mkdir(parents=True)
    with contextlib.closing(duckdb.connect(str(path))) as con:
        con.execute(made)
    domain = Domain(tmp_path, threads=1)
    try:
        with pytest.raises(DependencyError, match="no plain table"), domain.snapshot("payroll", "v"):
            pass
    finally:
        domain.close()


def test_the_bounds_are_compared_exactly_not_as_floats() -> None:
    """A bound of 3,777,911,035,808,559,600 units is 3,777,911,035,808,559,616 as a float: a
    value 10 units past the bound was taken as inside and summed unclamped."""
    bound = 3_777_911_035_808_559_600
    assert float(bound) > bound + 10
    compiled = dataclasses.replace(_plan("mean", []), value_units=(0, bound))
    for largest, inside in ((bound + 10, False), (bound, True)):
        facts = VersionFacts({"score": ColumnFacts(smallest=0, largest=largest, has_nan=False, is_integer=True)})
        snap = Snapshot(_NoQueries(), "payroll", "v", facts)  # type: ignore[arg-type]
        assert snap._checked_values(compiled) == (inside, True)


def test_a_histogram_of_one_bin_counts_the_rows_with_a_value(tmp_path: Path) -> None:
    template = AggregateTemplate.model_validate(
        {"title": "t", "dataset": "payroll", "group_by": ["region"], "epsilon": {"default": "1", "max": "5"},
         "measure": "histogram", "column": "amount", "bins": [0, 100]}
    )  # fmt: skip
    compiled = plan("one-bin", template, ENTRY, "v", {"group_by": ["region"]}, epsilon="1")
    _write_version(
        tmp_path, "v", [("A", None, "north", 5.0, 0), ("B", None, "north", None, 0), ("C", None, "east", 1e9, 0)]
    )
    domain = Domain(tmp_path, threads=1)
    try:
        with domain.snapshot("payroll", "v") as snap:
            assert list(snap.aggregate(compiled)["bins"]) == [1, 0, 1, 0]  # NULL is in no bin; 1e9 clamps in
    finally:
        domain.close()


@given(rows=st.lists(unit_rows, min_size=1, max_size=8), group=st.sampled_from([[], ["region"]]))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_bins_placed_by_numpy_are_the_bins_placed_row_by_row(
    tmp_path: Path, rows: list[list[tuple[Any, ...]]], group: list[str]
) -> None:
    """A histogram's or quantile's result placed from cell numbers (the DuckDB path) equals the
    same result placed row by row from its keys (the Spark path), with keys outside the
    categories and NULLs."""
    from gateway.engine.plan_results import binned_statistics, exact_statistics
    from gateway.engine.plan_sql import aggregate_sql

    data_dir = tmp_path / f"p{len(list(tmp_path.iterdir()))}"
    flat = [(f"U{u}", None, region, amount, score) for u, unit in enumerate(rows) for region, amount, score in unit]
    _write_version(data_dir, "v", flat)
    con = duckdb.connect(str(version_path(data_dir, "payroll", "v")), read_only=True)
    try:
        for kind in ("histogram", "quantile"):
            compiled = _plan(kind, group)
            sql, params = aggregate_sql(compiled)
            by_rows = exact_statistics(compiled, con.execute(sql, params).fetchall())
            numbered, numbers = aggregate_sql(compiled, cell_numbers=True)
            placed = binned_statistics(compiled, list(con.execute(numbered, numbers).fetchnumpy().values()))
            assert {name: list(values) for name, values in placed.items()} == by_rows
    finally:
        con.close()


@given(
    values=st.lists(st.one_of(st.integers(-60, 60), st.sampled_from(HOSTILE_INTS), st.none()), min_size=1, max_size=40),
    step=st.sampled_from([1, 5, 10, 25]),
)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_an_arithmetic_bin_index_gives_the_bins_of_comparing_with_each_edge(
    tmp_path: Path, values: list[int | None], step: int
) -> None:
    """On a regular grid the bin is (units - first) // step, clamped; without one, a CASE over
    the edges. Both agree with comparing each clamped value with the edges, hostile values too."""
    from gateway.engine import regular_grid

    edges = list(range(-50, 51, step))
    regular = AggregateTemplate.model_validate(
        {"title": "t", "dataset": "payroll", "group_by": ["region"], "epsilon": {"default": "1", "max": "5"},
         "measure": "histogram", "column": "score", "bins": edges}
    )  # fmt: skip
    uneven = (
        AggregateTemplate.model_validate({**regular.model_dump(), "bins": [*edges[:-2], edges[-2] - 1, 50]})
        if step > 1
        else None
    )
    data_dir = tmp_path / f"b{len(list(tmp_path.iterdir()))}"
    _write_version(data_dir, "v", [(f"U{i}", None, "north", None, v) for i, v in enumerate(values)])
    domain = Domain(data_dir, threads=1)
    try:
        for template in (regular, uneven):
            if template is None:
                continue
            assert (regular_grid(template.bins, template.granularity) is None) is (template is uneven)
            compiled = plan("h", template, ENTRY, "v", {"group_by": ["region"]}, epsilon="1")
            with domain.snapshot("payroll", "v") as snap:
                north = list(snap.aggregate(compiled)["bins"][: len(template.bins) - 1])
            expected = [0] * (len(template.bins) - 1)
            for v in values:
                if v is None:
                    continue  # missing: in no bin
                clamped = min(max(v, -50), 50)
                below = sum(1 for e in template.bins[1:-1] if clamped >= e)
                expected[below] += 1
            assert north == expected
    finally:
        domain.close()
