"""A histogram or quantile grouped by several columns is placed from each row's cell number,
computed in DuckDB (`aggregate_sql(..., cell_numbers=True)`): the same cells as placing the rows
by their keys (the Spark path), with text and boolean keys, keys outside the categories, and NULLs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.domain.aggregate import AggregateTemplate, plan
from gateway.domain.catalog import CatalogEntry
from gateway.engine import Domain, version_path
from gateway.engine.plan_results import binned_statistics, exact_statistics
from gateway.engine.plan_sql import aggregate_sql

ENTRY = CatalogEntry.model_validate(
    {
        "dataset": "shops",
        "registration_code": "TEST-1",
        "title": "Shops",
        "owner_body": "test",
        "source_system": "test",
        "classification": {"domain": "trade", "category": "shops"},
        "level": "general",
        "privacy_unit": {"column": "person", "max_rows": 3},
        "columns": [
            {"name": "person", "type": "string", "sensitivity": "identifier"},
            {"name": "region", "type": "string", "sensitivity": "public", "categories": ["n", "s", "e", "w"]},
            {"name": "sector", "type": "string", "sensitivity": "public", "categories": ["a", "b", "c"]},
            {"name": "open", "type": "boolean", "sensitivity": "public", "nullable": True},
            {"name": "amount", "type": "integer", "sensitivity": "personal", "bounds": [0, 100], "nullable": True},
        ],
    }
)
TEMPLATES = {
    "histogram": {"measure": "histogram", "column": "amount", "bins": [0, 25, 50, 75, 100]},
    "quantile": {"measure": "quantile", "column": "amount", "quantiles": ["0.5"]},
}
GROUPS = [["region", "sector"], ["sector", "open"], ["open"], ["open", "region"]]

rows_strategy = st.lists(
    st.tuples(
        st.sampled_from(["n", "s", "e", "w", "elsewhere", None]),
        st.sampled_from(["a", "b", "c", "z", None]),
        st.sampled_from([True, False, None]),
        st.one_of(st.integers(-10, 110), st.none()),
    ),
    min_size=1,
    max_size=60,
)


SHOPS = "person VARCHAR, region VARCHAR, sector VARCHAR, open BOOLEAN, amount BIGINT"


def _version(data_dir: Path, rows: list[tuple[Any, ...]], columns: str = SHOPS) -> None:
    """Version `v` of `shops` holding `rows`, each with its own person first unless the rows
    name theirs (`columns` starts with person either way)."""
    path = version_path(data_dir, "shops", "v")
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    con.execute(f"CREATE TABLE records ({columns})")
    width = columns.count(",") + 1
    named = [row if len(row) == width else (f"P{i}", *row) for i, row in enumerate(rows)]
    con.executemany(f"INSERT INTO records VALUES ({', '.join('?' * width)})", named)  # noqa: S608 - placeholders
    con.close()


def _plan(measure: str, group_by: list[str]) -> Any:
    template = AggregateTemplate.model_validate(
        {
            "title": "t",
            "dataset": "shops",
            "group_by": ["region", "sector", "open"],
            "epsilon": {"default": "1", "max": "5"},
            **TEMPLATES[measure],
        }
    )
    return plan(measure, template, ENTRY, "v", {"group_by": group_by}, epsilon="1")


@given(rows=rows_strategy, group_by=st.sampled_from(GROUPS))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_cells_numbered_in_sql_are_the_cells_of_the_keys(
    tmp_path: Path, rows: list[tuple[Any, ...]], group_by: list[str]
) -> None:
    data_dir = tmp_path / f"v{len(list(tmp_path.iterdir()))}"
    _version(data_dir, rows)
    con = duckdb.connect(str(version_path(data_dir, "shops", "v")), read_only=True)
    try:
        for measure in TEMPLATES:
            compiled = _plan(measure, group_by)
            by_keys = exact_statistics(compiled, con.execute(*aggregate_sql(compiled)).fetchall())
            numbered = con.execute(*aggregate_sql(compiled, cell_numbers=True)).fetchnumpy()
            placed = binned_statistics(compiled, list(numbered.values()))
            assert [int(v) for v in placed["bins"]] == by_keys["bins"], (measure, group_by)
    finally:
        con.close()


def test_rows_outside_every_cell_are_counted_nowhere(tmp_path: Path) -> None:
    """Through the snapshot: each row in its own cell and bin, and a row with any key outside
    the categories, or NULL, in none."""
    rows = [("s", "b", True, 10), ("s", "z", False, 60), ("w", None, False, 99), ("x", "a", True, 1),
            (None, "a", True, 1), ("n", "a", None, 1)]  # fmt: skip
    _version(tmp_path, rows)
    compiled = _plan("histogram", ["region", "open"])
    domain = Domain(tmp_path, threads=1)
    try:
        with domain.snapshot("shops", "v") as snap:
            bins = [int(v) for v in snap.aggregate(compiled)["bins"]]
    finally:
        domain.close()
    assert sum(bins) == 3
    width = len(compiled.edges) - 1
    expected = {(("s", True), 0), (("s", False), 2), (("w", False), 3)}
    found = {(cell, i) for c, cell in enumerate(compiled.cells) for i in range(width) if bins[c * width + i]}
    assert found == expected


@pytest.mark.parametrize("group_by", GROUPS)
def test_the_cell_number_binds_the_categories_and_quotes_only_column_names(group_by: list[str]) -> None:
    sql, params = aggregate_sql(_plan("quantile", group_by), cell_numbers=True)
    assert "'n'" not in sql and "'a'" not in sql  # categories are bound, never written into the SQL
    for column in group_by:
        categories = ENTRY.column(column).categories
        if categories is not None:
            assert list(categories) in params
        else:  # a boolean column's two values
            assert any(isinstance(p, list) and sorted(p) == [False, True] for p in params)


def test_columns_named_as_the_querys_own_aliases_keep_their_meaning(tmp_path: Path) -> None:
    """A catalogue may name columns u, v, b or c: the query's own names start with an underscore,
    which no catalogue identifier does, so persons are still counted as persons and values as
    values (a column named u once made `count(DISTINCT u)` count its groups)."""
    entry = CatalogEntry.model_validate(
        {
            **ENTRY.model_dump(mode="json", exclude={"columns"}),
            "columns": [
                {"name": "person", "type": "string", "sensitivity": "identifier"},
                {"name": "u", "type": "string", "sensitivity": "public", "categories": ["x", "y"]},
                {"name": "b", "type": "boolean", "sensitivity": "public"},
                {"name": "v", "type": "integer", "sensitivity": "personal", "bounds": [0, 100]},
                {"name": "c", "type": "integer", "sensitivity": "personal", "bounds": [0, 100]},
            ],
        }
    )
    rows = [("p1", "x", True, 10, 90), ("p1", "x", True, 20, 90), ("p2", "x", False, 60, 1), ("p3", "y", True, 99, 1)]
    _version(tmp_path, rows, "person VARCHAR, u VARCHAR, b BOOLEAN, v BIGINT, c BIGINT")

    def release(measure: dict[str, Any], group_by: list[str]) -> list[int]:
        template = AggregateTemplate.model_validate(
            {"title": "t", "dataset": "shops", "group_by": ["u", "b"], "epsilon": {"default": "1", "max": "5"},
             **measure}
        )  # fmt: skip
        compiled = plan("t", template, entry, "v", {"group_by": group_by}, epsilon="1")
        with domain.snapshot("shops", "v") as snap:
            exact = snap.aggregate(compiled)
        (values,) = exact.values()
        return [int(x) for x in values]

    domain = Domain(tmp_path, threads=1)
    try:
        assert release({"measure": "count_units"}, ["u"]) == [2, 1]  # persons per u, not groups
        assert release({"measure": "count_units"}, ["u", "b"]) == [1, 1, 0, 1]  # (x,F) (x,T) (y,F) (y,T)
        assert release({"measure": "sum", "column": "v"}, ["u"]) == [90, 99]
        histogram = {"measure": "histogram", "column": "v", "bins": [0, 50, 100]}
        assert release(histogram, ["b"]) == [0, 1, 2, 1]  # b = false: 60; true: 10, 20, 99
    finally:
        domain.close()
