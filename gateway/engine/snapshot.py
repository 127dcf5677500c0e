"""One dataset version, read-only, for the length of one request: the exact statistics that
services turn into releases. Nothing it returns is released as such."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from gateway.domain.aggregate import MEASURES_WITH_BINS, Plan
from gateway.domain.names import is_identifier
from gateway.engine.plan_results import ExactStatistics, binned_statistics, exact_statistics, observed_counts
from gateway.engine.plan_sql import aggregate_sql
from gateway.engine.sql import (
    COUNT_SQL,
    HASH_PREFIX,
    INDEX_PREFIX,
    INTEGER_TYPES,
    TABLE,
    hash_column,
    index_table,
    quote,
    scalar_int,
)
from gateway.errors import DependencyError, InternalError

_WHOLE_TYPES = INTEGER_TYPES | {"UBIGINT", "HUGEINT", "UHUGEINT"}
_NUMBER_TYPES = _WHOLE_TYPES | {"FLOAT", "DOUBLE"}
_log = logging.getLogger("veilgate.engine")


@dataclass(frozen=True, slots=True)
class ColumnFacts:
    """What a numeric column of a version holds, as far as clamping needs to know."""

    smallest: float | int | None
    """None: the column holds no number (NULLs only, or no rows)."""
    largest: float | int | None
    has_nan: bool
    is_integer: bool
    """Stored as a 64-bit or narrower integer."""


@dataclass(frozen=True, slots=True)
class VersionFacts:
    """What a version holds, read once when a process opens it: its numeric columns' ranges,
    and how a key's rows are found."""

    columns: Mapping[str, ColumnFacts]
    hashed_key: str | None = None
    """The key whose stored hash sorts the table (each pass's run), when every row's stored hash
    is the one this DuckDB computes (a file built by another release may hold another's)."""
    indexed_keys: frozenset[str] = frozenset()
    """Keys with a table of (hash, row id) sorted by the hash, whose pairs check as a whole."""


def column_facts(cursor: duckdb.DuckDBPyConnection) -> VersionFacts:
    """Every numeric column's range and the lookup layout, in one scan of the version. Read
    when a process first opens the version, for all its columns at once (SECURITY: read per
    column on a column's first aggregate, the scan made that release measurably slower, which
    told whether anyone had asked about that column on this process since it started). A
    version file never changes."""
    # SECURITY: facts read once hold only for stored values. A view, or a generated column (which
    # may compute from now() or random()), would hold other values at the next read; a table of
    # the same name in another schema would describe other columns.
    tables = cursor.execute(
        "SELECT table_name, table_schema, table_type FROM information_schema.tables"
        " WHERE table_name = $1 OR starts_with(table_name, $2)",
        [TABLE, INDEX_PREFIX],
    ).fetchall()
    described = cursor.execute(
        "SELECT column_name, data_type, is_generated FROM information_schema.columns"
        " WHERE table_schema = 'main' AND table_name = $1 ORDER BY ordinal_position",
        [TABLE],
    ).fetchall()
    records = [(schema, kind) for name, schema, kind in tables if name == TABLE]
    if (
        records != [("main", "BASE TABLE")]
        or any(kind != "BASE TABLE" for _n, _s, kind in tables)  # a key table that is a view
        or any(generated != "NEVER" for _n, _t, generated in described)
    ):
        raise DependencyError("dataset: its version file holds no plain table of records; register it again")
    names = {str(name) for name, _t, _g in described}
    indexed = [
        key
        for name, schema, _kind in tables
        if schema == "main"
        and name.startswith(INDEX_PREFIX)
        and is_identifier(key := name.removeprefix(INDEX_PREFIX))
        and key in names
    ]
    hashed = [
        key
        for name in names
        if name.startswith(HASH_PREFIX) and is_identifier(key := name.removeprefix(HASH_PREFIX)) and key in names
    ]
    numeric = [(str(name), str(kind)) for name, kind, _g in described if str(kind) in _NUMBER_TYPES]
    numeric = [(name, kind) for name, kind in numeric if is_identifier(name)]  # not a stored hash
    parts = [f"count(*) FILTER ({hash_column(key)} IS DISTINCT FROM hash({quote(key)}))" for key in hashed]
    for name, kind in numeric:
        q = quote(name)
        if kind in _WHOLE_TYPES:
            parts += [f"min({q})", f"max({q})", "FALSE"]
        else:  # DuckDB orders NaN above every number: it is counted apart and left out of the range
            number = f"FILTER (NOT isnan({q}))"
            parts += [f"min({q}) {number}", f"max({q}) {number}", f"coalesce(bool_or(isnan({q})), FALSE)"]
    # A key table is checked as a whole, each (hash, row id) pair counted by a hash of the pair:
    # the count and sum of those against this DuckDB's, computed from the key column and the row
    # ids (a join of every row id would cost far more). A pair moved to another row changes it.
    for key in indexed:
        q = quote(key)
        parts.append(
            f"(SELECT (count(*), sum(CAST(hash(h, r) AS HUGEINT))) FROM {index_table(key)})"  # noqa: S608
            f" IS DISTINCT FROM (count({q}), sum(CAST(hash(hash({q}), rowid) AS HUGEINT)) FILTER ({q} IS NOT NULL))"
        )
    if not parts:
        return VersionFacts({})
    # fetchall, not fetchone: a result left open on the cursor refuses the request's next relation
    rows = cursor.execute(f"SELECT {', '.join(parts)} FROM {TABLE}").fetchall()  # noqa: S608 - quoted names
    if len(rows) != 1:  # unreachable: an aggregate without GROUP BY gives one row
        raise InternalError("a version's column ranges could not be read (this is a bug)")
    row = rows[0]
    # A stored hash that differs from this DuckDB's on any row would find nothing for that key:
    # the key is then found by its value (a scan), never by a hash that might miss.
    trusted = [key for i, key in enumerate(hashed) if row[i] == 0]
    row = row[len(hashed) :]
    columns = {
        name: ColumnFacts(row[3 * i], row[3 * i + 1], bool(row[3 * i + 2]), kind in INTEGER_TYPES)
        for i, (name, kind) in enumerate(numeric)
    }
    row = row[3 * len(numeric) :]
    trusted_tables = frozenset(key for i, key in enumerate(indexed) if row[i] is False)
    if len(trusted) != len(hashed) or len(trusted_tables) != len(indexed):
        _log.warning("a version's stored key hashes differ from this DuckDB's; its lookups scan (register it again)")
    return VersionFacts(columns, trusted[0] if trusted else None, trusted_tables)


class Snapshot:
    """One dataset version, read-only, for the length of one request."""

    def __init__(
        self,
        cursor: duckdb.DuckDBPyConnection,
        dataset: str,
        version: str,
        facts: VersionFacts,
    ) -> None:
        """`facts`: the version's `column_facts`, read once by whoever keeps the version open."""
        self._cursor = cursor
        self.dataset = dataset
        self.version = version
        self._facts = facts

    def count_rows(self) -> int:
        return scalar_int(self._cursor, COUNT_SQL)

    def lookup(self, key_column: str, key: str, columns: Sequence[str]) -> list[tuple[Any, ...]]:
        """Rows whose `key_column` equals `key` exactly, in one order whatever the file's (every
        column ascending, NULLs last); names come from the catalogue."""
        selected = ", ".join(quote(c) for c in (key_column, *columns))
        exact = True  # whether the query compares the key itself
        if key_column == self._facts.hashed_key:  # zone maps on the sorted hash, then the value
            where = f"{hash_column(key_column)} = hash($1) AND {quote(key_column)} = $1"
        elif key_column in self._facts.indexed_keys:  # the row ids of the hash
            # Checking the key here made DuckDB scan the table instead of fetching the row ids:
            # another key of the same hash is dropped below.
            where = f"rowid IN (SELECT r FROM {index_table(key_column)} WHERE h = hash($1))"  # noqa: S608
            exact = False
        else:  # a file from before these layouts (sorted by the key, an ART index), or untrusted hashes
            where = f"{quote(key_column)} = $1"
        sql = f"SELECT {selected} FROM {TABLE} WHERE {where} ORDER BY {_ascending(2, len(columns)) or '1'}"  # noqa: S608
        try:
            found = self._cursor.execute(sql, [key]).fetchall()
        except duckdb.Error as exc:  # SECURITY: DuckDB's message may quote the caller's key
            raise InternalError(f"a lookup failed in the data engine ({type(exc).__name__})") from None
        return [tuple(row[1:]) for row in found if exact or row[0] == key]

    def key_index(self, key_column: str, columns: Sequence[str]) -> dict[str, list[tuple[Any, ...]]]:
        """Every row's `columns`, by exact value of `key_column`: one scan instead of a query per
        key. A key's rows come in the order `lookup` gives them."""
        selected = [key_column, *columns]
        index: dict[str, list[tuple[Any, ...]]] = {}
        sql = f"SELECT {', '.join(quote(c) for c in selected)} FROM {TABLE} ORDER BY {_ascending(1, len(selected))}"  # noqa: S608
        result = self._cursor.execute(sql)  # catalogue identifiers only
        while batch := result.fetchmany(65_536):
            for row in batch:
                index.setdefault(row[0], []).append(tuple(row[1:]))
        return index

    def aggregate(self, plan: Plan) -> ExactStatistics:
        """The exact statistics a plan names, one integer per cell (times bin), in the plan's order.

        Values are clamped to the catalogue bounds here although registration already refused
        out-of-bound values: the sensitivity the noise is calibrated to must hold for whatever
        the version file holds. NULL and NaN count as missing (no value, not in any bin);
        infinities clamp to the bounds. Rows whose group keys are not in the public category
        lists belong to no cell.
        """
        sql, params = aggregate_sql(plan, *self._checked_values(plan), cell_numbers=True)
        result = self._cursor.execute(sql, params)
        if plan.template.measure in MEASURES_WITH_BINS:
            return binned_statistics(plan, list(result.fetchnumpy().values()))
        return exact_statistics(plan, result.fetchall())

    def export(self, target: Path, columns: Sequence[str]) -> int:
        """The version's rows (these columns only) as a Parquet file for an approved job's
        sandbox; read through the serving connection, written by PyArrow. Returns the row count."""
        import pyarrow.parquet as pq  # noqa: PLC0415 - only jobs need it

        selected = ", ".join(quote(c) for c in columns)
        table = self._cursor.sql(f"SELECT {selected} FROM {TABLE}").to_arrow_table()  # noqa: S608
        if table is None:
            raise InternalError("an export returned no table (this is a bug)")
        pq.write_table(table, target)
        return int(table.num_rows)

    def grouped_counts(self, plan: Plan) -> dict[tuple[str, ...], int]:
        """Exact row counts per group key observed in the data (as text), for DP key selection.

        Groups with a NULL in a key are left out. The keys come from the data, so only the
        mechanism's thresholded output may ever leave.
        """
        sql, params = aggregate_sql(plan)
        return observed_counts(plan, self._cursor.execute(sql, params).fetchall())

    def cross_products(self, columns: Sequence[tuple[str, float, float]], units: int) -> tuple[list[int], int]:
        """Sums of products of fixed-point columns, for least squares from sufficient statistics.

        Each column (name, low, high) is clamped to its bounds and scaled to whole units of
        `max(|low|, |high|) / units`, so every value lies in [-units, units]; an intercept column
        of constant `units` comes first. Rows with NULL or NaN in any column are left out.
        Returns the sums over i <= j of u_i * u_j in row-major order of the upper triangle, and
        the number of rows used (an exact figure: never released as such).
        """
        params: list[Any] = []

        def bind(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        scaled = [bind(units)]
        present: list[str] = []
        for name, low, high in columns:
            column = f"CAST({quote(name)} AS DOUBLE)"
            largest = max(abs(low), abs(high)) or 1.0
            clamped = f"greatest(least({column}, {bind(high)}), {bind(low)})"
            scaled.append(f"CAST(round({clamped} / {bind(largest)} * {bind(units)}) AS BIGINT)")
            present.append(f"{quote(name)} IS NOT NULL AND NOT isnan({column})")
        inner = ", ".join(f"{expr} AS u{i}" for i, expr in enumerate(scaled))
        products = [f"sum(CAST(u{i} AS HUGEINT) * u{j})" for i in range(len(scaled)) for j in range(i, len(scaled))]
        # SECURITY: quoted catalogue identifiers and bound values only.
        sql = (
            f"SELECT count(*), {', '.join(products)} FROM (SELECT {inner} FROM {TABLE}"  # noqa: S608
            f" WHERE {' AND '.join(present) or 'TRUE'})"
        )
        row = self._cursor.execute(sql, params).fetchone()
        if row is None:
            raise InternalError("an aggregate query returned no row (this is a bug)")
        return [int(v or 0) for v in row[1:]], int(row[0])

    def cross_tab(
        self, keys: Sequence[str], filters: Sequence[tuple[str, Sequence[Any]]], unit: str | None
    ) -> dict[tuple[Any, ...], int]:
        """Exact rows (or distinct non-NULL `unit` values) per combination of key values, among
        rows whose filter columns hold one of the given values: an SDC table the gateway computes.
        Names come from the catalogue, values are bound. Never released as such: disclosure
        control and output checking come after."""
        params: list[Any] = []
        where = []
        for column, values in filters:
            marks = []
            for value in values:
                params.append(value)
                marks.append(f"${len(params)}")
            where.append(f"{quote(column)} IN ({', '.join(marks)})")
        selected = [quote(k) for k in keys]
        measure = "count(*)" if unit is None else f"count(DISTINCT {quote(unit)})"
        # SECURITY: quoted catalogue identifiers and bound values only.
        sql = f"SELECT {', '.join([*selected, measure])} FROM {TABLE} WHERE {' AND '.join(where) or 'TRUE'}"  # noqa: S608
        if keys:
            sql += f" GROUP BY {', '.join(str(i + 1) for i in range(len(keys)))}"
        return {tuple(row[:-1]): int(row[-1]) for row in self._cursor.execute(sql, params).fetchall()}

    def pair_counts(self, first: str, second: str) -> dict[tuple[Any, Any], int]:
        """Rows per (first, second) value pair, NULLs left out: the counts behind naive Bayes."""
        a, b = quote(first), quote(second)
        sql = f"SELECT {a}, {b}, count(*) FROM {TABLE} WHERE {a} IS NOT NULL AND {b} IS NOT NULL GROUP BY 1, 2"  # noqa: S608
        return {(row[0], row[1]): int(row[2]) for row in self._cursor.execute(sql).fetchall()}

    def _checked_values(self, plan: Plan) -> tuple[bool, bool]:
        """(every value of the measured column lies in the bounds and none is NaN, it is stored
        as an integer), from the version's column facts: no scan of its own.

        When both hold and the granularity is 1, the values already are whole units inside the
        clamping range, so the query sums the column as it is and scans at raw speed (clamping
        row by row costs 2-5x the scan); otherwise it clamps and rounds every value.
        """
        column = plan.template.column
        if column is None or plan.value_units is None:
            return False, False
        facts = self._facts.columns.get(column)
        if facts is None:  # not a number in this file: the query clamps whatever it holds
            return False, False
        # Exact bounds: a float of the bound may round past it, and let values just beyond pass.
        low = plan.value_units[0] * plan.template.granularity
        high = plan.value_units[1] * plan.template.granularity
        inside = not facts.has_nan and (
            facts.smallest is None or (low <= facts.smallest and facts.largest is not None and facts.largest <= high)
        )
        return inside, facts.is_integer


def _ascending(first: int, count: int) -> str:
    """ORDER BY terms for `count` selected columns from position `first`: a key's rows in one
    order whatever the file's (its row order is not part of a version)."""
    return ", ".join(f"{first + i} ASC NULLS LAST" for i in range(count))
