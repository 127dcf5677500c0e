"""The checks a source file passes before it becomes a dataset version.

The checks are aggregate queries over the loaded source (`src`), so they run out of core like
any DuckDB query; a refusal names the column and the rule and counts rows, never a value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import duckdb

from gateway.domain.catalog import CatalogEntry, Column, ColumnType
from gateway.domain.identifiers import KEY_FORMATS
from gateway.engine.sql import INTEGER_TYPES, SQL_TYPE, quote
from gateway.errors import InternalError, RegistrationError

_ACCEPTED_PARQUET_TYPES: dict[ColumnType, Callable[[str], bool]] = {
    ColumnType.STRING: lambda t: t == "VARCHAR",
    ColumnType.INTEGER: lambda t: t in INTEGER_TYPES,
    ColumnType.FLOAT: lambda t: t in {"FLOAT", "DOUBLE"} or t in INTEGER_TYPES or t.startswith("DECIMAL"),
    ColumnType.BOOLEAN: lambda t: t == "BOOLEAN",
    ColumnType.DATE: lambda t: t == "DATE",
}


def check_schema(con: duckdb.DuckDBPyConnection, entry: CatalogEntry, is_csv: bool) -> None:
    found = {str(row[0]): str(row[1]) for row in con.execute("DESCRIBE src").fetchall()}
    problems = schema_problems(entry, found, is_csv)
    if problems:
        raise RegistrationError("; ".join(problems))


def schema_problems(entry: CatalogEntry, found: dict[str, str], is_csv: bool) -> list[str]:
    """What is wrong with a source's columns ({name: SQL type name as DuckDB spells it})."""
    problems: list[str] = []
    declared = {c.name for c in entry.columns}
    missing = [c.name for c in entry.columns if c.name not in found]
    extra = sorted(set(found) - declared)
    if missing:
        problems.append(f"missing column(s): {', '.join(missing)}")
    if extra:
        problems.append(f"column(s) not in the catalogue entry: {', '.join(extra)}")
    if not is_csv:
        for col in entry.columns:
            if col.name in found and not _ACCEPTED_PARQUET_TYPES[col.type](found[col.name]):
                problems.append(f"column {col.name}: type {found[col.name]} does not match {col.type.value}")
    return problems


def check_rows(con: duckdb.DuckDBPyConnection, entry: CatalogEntry, is_csv: bool) -> None:
    """Every value against the catalogue, then every key column's distinct values against its
    key format. Value problems are reported before key problems, as separate checks would.

    The value checks ride on the grouping that lists the distinct values of one key column (the
    privacy unit's when it has a key format): one pass over the source instead of two. Each
    other key column is one DISTINCT; a catalogue without key formats gets one aggregate.
    """
    checks, params = _value_checks(entry, is_csv)
    keyed = sorted(
        (c for c in entry.columns if c.key_format is not None), key=lambda c: c.name != entry.privacy_unit.column
    )
    bad: dict[str, int] = {}
    if keyed:
        counts, bad[keyed[0].name] = _grouped_pass(con, keyed[0], checks, params, is_csv)
    else:
        counts = _ungrouped_pass(con, checks, params)
    problems = [f"{label} ({count} row(s))" for (label, _), count in zip(checks, counts, strict=True) if count]
    if problems:
        raise RegistrationError("; ".join(problems))
    for col in keyed[1:]:
        sql = f"SELECT DISTINCT {quote(col.name)} FROM src WHERE {quote(col.name)} IS NOT NULL"  # noqa: S608
        bad[col.name] = _count_invalid(con.execute(sql), col, is_csv, [])
    key_problems = [
        f"column {c.name}: {bad[c.name]} distinct value(s) are not valid {c.key_format} keys"
        for c in entry.columns
        if bad.get(c.name)
    ]
    if key_problems:
        raise RegistrationError("; ".join(key_problems))


def _value_checks(entry: CatalogEntry, is_csv: bool) -> tuple[list[tuple[str, str]], list[Any]]:
    """(label, SQL condition) per check, and the parameters the conditions bind."""
    checks: list[tuple[str, str]] = []
    params: list[Any] = []
    for col in entry.columns:
        name = quote(col.name)
        value = f"TRY_CAST(NULLIF({name}, '') AS {SQL_TYPE[col.type]})" if is_csv else name
        raw_null = f"({name} IS NULL OR {name} = '')" if is_csv else f"{name} IS NULL"
        if is_csv and col.type is not ColumnType.STRING:
            checks.append(
                (f"column {col.name}: values that are not {col.type.value}", f"NOT {raw_null} AND {value} IS NULL")
            )
        if not col.nullable:
            checks.append((f"column {col.name}: missing values in a non-nullable column", raw_null))
        if col.type is ColumnType.FLOAT:
            checks.append(
                (
                    f"column {col.name}: NaN or infinite values",
                    f"{value} IS NOT NULL AND NOT isfinite(CAST({value} AS DOUBLE))",
                )
            )
        if col.bounds is not None:
            checks.append(
                (
                    f"column {col.name}: values outside the bounds [{col.bounds[0]:g}, {col.bounds[1]:g}]",
                    f"{value} IS NOT NULL AND ({value} < ${len(params) + 1} OR {value} > ${len(params) + 2})",
                )
            )
            params += [col.bounds[0], col.bounds[1]]
        if col.categories is not None:
            checks.append(
                (
                    f"column {col.name}: values outside the public category list",
                    f"{value} IS NOT NULL AND NOT list_contains(${len(params) + 1}, {value})",
                )
            )
            params.append(list(col.categories))
    return checks, params


def _counted(checks: list[tuple[str, str]]) -> str:
    # SECURITY: the conditions hold only quoted catalogue names and $n placeholders; every bound
    # and category list travels in the parameters.
    return "".join(f", count(*) FILTER (WHERE {cond})" for _, cond in checks)


def _ungrouped_pass(con: duckdb.DuckDBPyConnection, checks: list[tuple[str, str]], params: list[Any]) -> list[int]:
    if not checks:
        return []
    row = con.execute(f"SELECT 0{_counted(checks)} FROM src", params).fetchone()  # noqa: S608
    if row is None:
        raise InternalError("an aggregate query returned no row (this is a bug)")
    return [int(v) for v in row[1:]]


def _grouped_pass(
    con: duckdb.DuckDBPyConnection, key: Column, checks: list[tuple[str, str]], params: list[Any], is_csv: bool
) -> tuple[list[int], int]:
    """The check counts over all rows, and how many distinct values of `key` are invalid."""
    name = quote(key.name)
    result = con.execute(f"SELECT {name}{_counted(checks)} FROM src GROUP BY {name}", params)  # noqa: S608
    totals = [0] * len(checks)
    bad = _count_invalid(result, key, is_csv, totals)
    return totals, bad


def _count_invalid(result: duckdb.DuckDBPyConnection, key: Column, is_csv: bool, totals: list[int]) -> int:
    """Invalid distinct keys in the first column of `result`; adds its other columns to `totals`.
    Streamed in batches: a key column may hold hundreds of millions of distinct values."""
    if key.key_format is None:
        raise InternalError("a key check on a column without a key format (this is a bug)")
    is_valid = KEY_FORMATS[key.key_format]
    bad = 0
    while batch := result.fetchmany(65_536):
        columns = list(zip(*batch, strict=True))
        bad += sum(1 for v in columns[0] if v is not None and not (is_csv and v == "") and not is_valid(v))
        for i, column in enumerate(columns[1:]):
            totals[i] += sum(column)
    return bad
