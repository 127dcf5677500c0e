"""The data domain on DuckDB: building dataset versions and serving them read-only.

Owns every DuckDB connection. Imports no other leaf; it receives catalogue entries (domain
types) and paths. Invariants it protects:
- SQL is built only from identifiers that the catalogue validated (and quotes them) and from
  bound parameters; no caller-supplied text is ever spliced into SQL.
- Serving connections are read-only, with external file and network access disabled,
  extension autoloading off and the configuration locked before the first query.
- A version file is written under a temporary name and renamed into place complete;
  a snapshot keeps its connection open until it ends, so a request in flight finishes on the
  version it started on while new requests see the new one.
- Errors never carry a data value or a SQL text: DuckDB errors are wrapped with a message
  that names the column and the check, and counts of offending rows.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import rfc8785

from gateway.atomic_files import fsync_path, write_atomic
from gateway.domain.aggregate import MEASURES_WITH_BINS, Plan, bin_count
from gateway.domain.catalog import CatalogEntry, Column, ColumnType
from gateway.domain.identifiers import KEY_FORMATS
from gateway.domain.intervals import centre
from gateway.errors import DependencyError, InternalError, NotFound, RegistrationError

ProgressFn = Callable[[str], None]

_SQL_TYPE = {
    ColumnType.STRING: "VARCHAR",
    ColumnType.INTEGER: "BIGINT",
    ColumnType.FLOAT: "DOUBLE",
    ColumnType.BOOLEAN: "BOOLEAN",
    ColumnType.DATE: "DATE",
}
_INTEGER_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER"}
_ACCEPTED_PARQUET_TYPES: dict[ColumnType, Callable[[str], bool]] = {
    ColumnType.STRING: lambda t: t == "VARCHAR",
    ColumnType.INTEGER: lambda t: t in _INTEGER_TYPES,
    ColumnType.FLOAT: lambda t: t in {"FLOAT", "DOUBLE"} or t in _INTEGER_TYPES or t.startswith("DECIMAL"),
    ColumnType.BOOLEAN: lambda t: t == "BOOLEAN",
    ColumnType.DATE: lambda t: t == "DATE",
}
SERVING_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "lock_configuration": True,
}
TABLE = "records"
COUNT_SQL = f"SELECT count(*) FROM {TABLE}"  # noqa: S608 - constant table name


def quote(identifier: str) -> str:
    """Quote a catalogue identifier. Catalogue names match ^[a-z][a-z0-9_]*$; refuse anything else."""
    if not identifier or not (identifier[0].isascii() and identifier[0].islower()):
        raise InternalError("identifier not taken from the catalogue (this is a bug)")
    if not all(c.isascii() and (c.islower() or c.isdigit() or c == "_") for c in identifier):
        raise InternalError("identifier not taken from the catalogue (this is a bug)")
    return f'"{identifier}"'


@dataclass(frozen=True, slots=True)
class BuildReport:
    version: str
    path: Path
    rows: int
    rows_dropped_by_contribution_bound: int
    unchanged: bool


def content_version(entry: CatalogEntry, source: Path) -> str:
    """SHA-256 over the canonical catalogue entry and the source file's bytes."""
    digest = hashlib.sha256(rfc8785.dumps(entry.model_dump(mode="json")))
    with source.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:32]


def version_path(data_dir: Path, dataset: str, version: str) -> Path:
    return data_dir / "domain" / dataset / f"{version}.duckdb"


def build_version(
    entry: CatalogEntry,
    source: Path,
    data_dir: Path,
    *,
    progress: ProgressFn = lambda _step: None,
) -> BuildReport:
    """Check `source` against `entry`, bound contributions, index, and write a version file.

    Nothing is written under the final name unless every check passed.
    """
    if not source.is_file():
        raise RegistrationError(f"source file {source.name} does not exist")
    suffix = source.suffix.lower()
    if suffix not in {".parquet", ".csv"}:
        raise RegistrationError("source must be a .parquet or .csv file")
    progress("hashing source")
    version = content_version(entry, source)
    final = version_path(data_dir, entry.dataset, version)
    report_file = final.with_suffix(".json")
    if final.exists() and report_file.exists():
        counts = json.loads(report_file.read_text())
        return BuildReport(version, final, int(counts["rows"]), int(counts["dropped"]), unchanged=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    building = final.with_name(f".building-{version}-{os.getpid()}.duckdb")
    building.unlink(missing_ok=True)
    try:
        con = duckdb.connect(str(building))
        try:
            report = _build_into(con, entry, source, suffix == ".csv", progress)
            con.execute("CHECKPOINT")
        finally:
            con.close()
        fsync_path(building)
        rows, dropped = report
        write_atomic(report_file, json.dumps({"rows": rows, "dropped": dropped}).encode())
        os.replace(building, final)
        fsync_path(final.parent)
    except duckdb.Error as exc:
        raise RegistrationError(f"the data engine refused the file ({type(exc).__name__})") from None
    finally:
        building.unlink(missing_ok=True)
        Path(f"{building}.wal").unlink(missing_ok=True)
    return BuildReport(version, final, rows, dropped, unchanged=False)


def _build_into(
    con: duckdb.DuckDBPyConnection,
    entry: CatalogEntry,
    source: Path,
    is_csv: bool,
    progress: ProgressFn,
) -> tuple[int, int]:
    progress("loading source")
    if is_csv:
        con.execute(
            "CREATE TEMP TABLE src AS SELECT * FROM read_csv($1, header = true, all_varchar = true)",
            [str(source)],
        )
    else:
        con.execute("CREATE TEMP TABLE src AS SELECT * FROM read_parquet($1)", [str(source)])
    progress("checking columns and types")
    _check_schema(con, entry, is_csv)
    progress("checking values against the catalogue")
    _check_values(con, entry, is_csv)
    _check_key_formats(con, entry, is_csv)
    total = _scalar_int(con, "SELECT count(*) FROM src")
    progress("enforcing the contribution bound")
    unit = entry.privacy_unit
    casts = ", ".join(f"{_cast(quote(c.name), c, is_csv)} AS {quote(c.name)}" for c in entry.columns)
    order_terms = [f"{quote(t.column)} {'DESC' if t.descending else 'ASC'}" for t in unit.keep_first_by]
    order_terms += [f"{quote(c.name)} ASC NULLS LAST" for c in entry.columns]
    sort_keys = ", ".join(quote(k) for k in entry.lookup_keys) or quote(unit.column)
    con.execute(
        f"CREATE TABLE {TABLE} AS SELECT * EXCLUDE (_rank) FROM ("  # noqa: S608 - catalogue identifiers only
        f" SELECT {casts}, row_number() OVER (PARTITION BY {quote(unit.column)}"
        f" ORDER BY {', '.join(order_terms)}) AS _rank FROM src"
        f") WHERE _rank <= $1 ORDER BY {sort_keys}",
        [unit.max_rows],
    )
    kept = _scalar_int(con, COUNT_SQL)
    progress("building lookup indexes")
    for key in entry.lookup_keys:
        # SECURITY: DDL cannot bind identifiers; `key` is a catalogue name, checked and quoted by quote().
        con.execute(f"CREATE INDEX {quote('idx_' + key)} ON {TABLE} ({quote(key)})")
    con.execute("DROP TABLE src")
    return kept, total - kept


def _cast(expr: str, column: Column, is_csv: bool) -> str:
    sql_type = _SQL_TYPE[column.type]
    if is_csv and column.type is ColumnType.STRING:
        return f"NULLIF({expr}, '')"
    return f"CAST({expr} AS {sql_type})"


def _check_schema(con: duckdb.DuckDBPyConnection, entry: CatalogEntry, is_csv: bool) -> None:
    found = {str(row[0]): str(row[1]) for row in con.execute("DESCRIBE src").fetchall()}
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
    if problems:
        raise RegistrationError("; ".join(problems))


def _check_values(con: duckdb.DuckDBPyConnection, entry: CatalogEntry, is_csv: bool) -> None:
    checks: list[tuple[str, str]] = []
    params: list[Any] = []
    for col in entry.columns:
        name = quote(col.name)
        value = f"TRY_CAST(NULLIF({name}, '') AS {_SQL_TYPE[col.type]})" if is_csv else name
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
    if not checks:
        return
    select = ", ".join(f"count(*) FILTER (WHERE {cond})" for _, cond in checks)
    # SECURITY: the conditions hold only quoted catalogue names and $n placeholders; every bound
    # and category list travels in `params`.
    row = con.execute(f"SELECT {select} FROM src", params).fetchone()  # noqa: S608
    if row is None:
        raise InternalError("an aggregate query returned no row (this is a bug)")
    problems = [f"{label} ({count} row(s))" for (label, _), count in zip(checks, row, strict=True) if count]
    if problems:
        raise RegistrationError("; ".join(problems))


def _check_key_formats(con: duckdb.DuckDBPyConnection, entry: CatalogEntry, is_csv: bool) -> None:
    problems: list[str] = []
    for col in entry.columns:
        if col.key_format is None:
            continue
        is_valid = KEY_FORMATS[col.key_format]
        sql = f"SELECT DISTINCT {quote(col.name)} FROM src WHERE {quote(col.name)} IS NOT NULL"  # noqa: S608
        values = [row[0] for row in con.execute(sql).fetchall()]
        bad = sum(1 for v in values if not (is_csv and v == "") and not is_valid(v))
        if bad:
            problems.append(f"column {col.name}: {bad} distinct value(s) are not valid {col.key_format} keys")
    if problems:
        raise RegistrationError("; ".join(problems))


def _scalar_int(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> int:
    row = con.execute(sql, list(params)).fetchone()
    if row is None:
        raise InternalError("a scalar query returned no row (this is a bug)")
    return int(row[0])


class Snapshot:
    """One dataset version, read-only, for the length of one request."""

    def __init__(
        self,
        cursor: duckdb.DuckDBPyConnection,
        dataset: str,
        version: str,
        value_checks: dict[tuple[str, str, str, float, float], tuple[bool, bool]] | None = None,
    ) -> None:
        self._cursor = cursor
        self.dataset = dataset
        self.version = version
        self._value_checks = {} if value_checks is None else value_checks

    def count_rows(self) -> int:
        return _scalar_int(self._cursor, COUNT_SQL)

    def lookup(self, key_column: str, key: str, columns: Sequence[str]) -> list[tuple[Any, ...]]:
        """Rows whose `key_column` equals `key` exactly; names come from the catalogue."""
        selected = ", ".join(quote(c) for c in columns)
        sql = f"SELECT {selected} FROM {TABLE} WHERE {quote(key_column)} = $1"  # noqa: S608
        return [tuple(row) for row in self._cursor.execute(sql, [key]).fetchall()]

    def key_index(self, key_column: str, columns: Sequence[str]) -> dict[str, list[tuple[Any, ...]]]:
        """Every row's `columns`, by exact value of `key_column`: one scan instead of a query per key."""
        selected = ", ".join(quote(c) for c in (key_column, *columns))
        index: dict[str, list[tuple[Any, ...]]] = {}
        result = self._cursor.execute(f"SELECT {selected} FROM {TABLE}")  # noqa: S608 - catalogue identifiers
        while batch := result.fetchmany(65_536):
            for row in batch:
                index.setdefault(row[0], []).append(tuple(row[1:]))
        return index

    def aggregate(self, plan: Plan) -> dict[str, list[int]]:
        """The exact statistics a plan names, one integer per cell (times bin), in the plan's order.

        Values are clamped to the catalogue bounds here although registration already refused
        out-of-bound values: the sensitivity the noise is calibrated to must hold for whatever
        the version file holds. NULL and NaN count as missing (no value, not in any bin);
        infinities clamp to the bounds. Rows whose group keys are not in the public category
        lists belong to no cell.
        """
        sql, params = _aggregate_sql(plan, *self._checked_values(plan))
        names = [s.name for s in plan.statistics]
        bins = bin_count(plan.template)
        binned = plan.template.measure in MEASURES_WITH_BINS  # the query then returns a bin index
        position = {cell: i for i, cell in enumerate(plan.cells)}
        out = {name: [0] * (len(plan.cells) * bins) for name in names}
        width = len(plan.group_by)
        for row in self._cursor.execute(sql, params).fetchall():
            cell = position.get(tuple(row[:width]))
            if cell is None:
                continue
            slot = cell * bins + (int(row[width]) if binned else 0)
            for name, value in zip(names, row[width + (1 if binned else 0) :], strict=True):
                out[name][slot] = int(value or 0)
        return out

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
        sql, params = _aggregate_sql(plan)
        width = len(plan.group_by)
        out: dict[tuple[str, ...], int] = {}
        for row in self._cursor.execute(sql, params).fetchall():
            if any(v is None for v in row[:width]):
                continue
            out[tuple(v.isoformat() if hasattr(v, "isoformat") else str(v) for v in row[:width])] = int(row[width])
        return out

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
        as an integer), checked once per version file and column: a version file never changes.

        When both hold and the granularity is 1, the values already are whole units inside the
        clamping range, so the query sums the column as it is and scans at raw speed (clamping
        row by row costs 2-5x the scan); otherwise it clamps and rounds every value.
        """
        column = plan.template.column
        if column is None or plan.value_units is None:
            return False, False
        low = float(plan.value_units[0] * plan.template.granularity)
        high = float(plan.value_units[1] * plan.template.granularity)
        key = (self.dataset, self.version, column, low, high)
        known = self._value_checks.get(key)
        if known is None:
            row = self._cursor.execute(
                "SELECT data_type FROM information_schema.columns WHERE table_name = $1 AND column_name = $2",
                [TABLE, column],
            ).fetchone()
            is_integer = row is not None and str(row[0]) in _INTEGER_TYPES
            name = quote(column)
            nan = "FALSE" if is_integer else f"isnan(CAST({name} AS DOUBLE))"
            outside = _scalar_int(
                self._cursor,
                f"SELECT count(*) FROM {TABLE} WHERE {name} < $1 OR {name} > $2 OR {nan}",  # noqa: S608
                [low, high],
            )
            known = (outside == 0, is_integer)
            self._value_checks[key] = known
        return known


def regular_grid(edges: Sequence[Decimal], granularity: Decimal) -> tuple[int, int] | None:
    """(first edge, step) in units of the granularity when the edges are evenly spaced whole
    units: a value's bin is then (units - first) // step, clamped to the first and last bins
    (the same bins as comparing the value in units with the edges)."""
    units = [e / granularity for e in edges]
    if any(u != u.to_integral_value() for u in units):
        return None
    whole = [int(u) for u in units]
    step = whole[1] - whole[0]
    if step < 1 or any(b - a != step for a, b in itertools.pairwise(whole)):
        return None
    return whole[0], step


def _aggregate_sql(plan: Plan, within_bounds: bool = False, is_integer: bool = False) -> tuple[str, list[Any]]:
    """SQL for a plan: catalogue identifiers (quoted) and $n placeholders only."""
    params: list[Any] = []

    def bind(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    conditions: list[str] = []
    for f in plan.filters:
        if f.values is not None:
            conditions.append(f"list_contains({bind(list(f.values))}, {quote(f.column)})")
        else:
            conditions.append(f"{quote(f.column)} BETWEEN {bind(f.low)} AND {bind(f.high)}")
    selected = [quote(g) for g in plan.group_by]
    inner = [*selected]
    template = plan.template
    if template.column is not None and plan.value_units is not None:
        column = quote(template.column)
        low, high = plan.value_units
        as_double = f"CAST({column} AS DOUBLE)"
        missing = f"{column} IS NULL OR isnan({as_double})"
        if within_bounds:  # checked on this very version file (Snapshot._checked_values)
            missing = f"{column} IS NULL"
            clamped = column
        else:
            upper, lower = bind(float(high * template.granularity)), bind(float(low * template.granularity))
            clamped = f"greatest(least({as_double}, {upper}), {lower})"
        if within_bounds and is_integer and template.granularity == 1:
            units_of = column
            inner.append(f"{column} AS v")
        else:
            rounded = f"CAST(round({clamped} / {bind(float(template.granularity))}) AS BIGINT)"
            units = f"greatest(least({rounded}, {bind(high)}), {bind(low)})"
            units_of = f"CASE WHEN {missing} THEN NULL ELSE {units} END"
            inner.append(f"{units_of} AS v")
        if template.measure in MEASURES_WITH_BINS:
            edges = template.bins
            grid = regular_grid(edges, template.granularity)
            if grid is not None:  # arithmetic index on the value in units: 5-8x faster than a CASE
                first, step = grid
                index = f"(CAST({units_of} AS BIGINT) - {bind(first)}) // {bind(step)}"
                last = bind(len(edges) - 2)  # greatest() skips NULLs: a missing value needs the CASE
                inner.append(f"CASE WHEN {missing} THEN NULL ELSE least(greatest({index}, 0), {last}) END AS b")
            else:
                steps = " ".join(f"WHEN {clamped} < {bind(float(e))} THEN {i}" for i, e in enumerate(edges[1:-1]))
                inner.append(f"CASE WHEN {missing} THEN NULL {steps} ELSE {len(edges) - 2} END AS b")
    else:
        inner.append("NULL AS v")
    inner.append(f"{quote(plan.privacy_unit)} AS u")
    outer = [*selected]
    where = " AND ".join(conditions) or "TRUE"
    if template.measure in MEASURES_WITH_BINS:
        outer.append("b")
        where_outer = "WHERE b IS NOT NULL"
    else:
        where_outer = ""
    for statistic in plan.statistics:
        if statistic.name == "centred_sum":  # exact in integers: sum(v - c) = sum(v) - c * count(v)
            middle = bind(centre(plan.value_units or (0, 0)))
            outer.append(f"CAST(sum(v) AS HUGEINT) - CAST({middle} AS HUGEINT) * count(v)")
            continue
        outer.append(
            {
                "rows": "count(*)",
                "values": "count(v)",
                "sum": "sum(v)",
                "units": "count(DISTINCT u)",
                "bins": "count(*)",
            }[statistic.name]
        )
    group = (
        f"GROUP BY {', '.join(outer[: len(selected) + (1 if 'b' in outer else 0)])}" if selected or "b" in outer else ""
    )
    # SECURITY: every name is a catalogue identifier passed through quote(); every value is bound.
    sql = f"SELECT {', '.join(outer)} FROM (SELECT {', '.join(inner)} FROM {TABLE} WHERE {where}) {where_outer} {group}"  # noqa: S608
    return sql, params


class _OpenVersion:
    def __init__(self, connection: duckdb.DuckDBPyConnection) -> None:
        self.connection = connection
        self.users = 0
        self.retired = False


class Domain:
    """Serving side of the data domain: read-only connections, one per open version."""

    def __init__(self, data_dir: Path, *, threads: int = 2, index_max_rows: int = 2_000_000) -> None:
        self._data_dir = data_dir
        self._threads = threads
        self._open: dict[tuple[str, str], _OpenVersion] = {}
        self._lock = threading.Lock()
        self._index_max_rows = index_max_rows
        self._indexes: dict[tuple[str, str, tuple[str, ...]], tuple[str, dict[str, list[tuple[Any, ...]]] | None]] = {}
        self._index_lock = threading.Lock()
        self._value_checks: dict[tuple[str, str, str, float, float], tuple[bool, bool]] = {}

    def find(
        self, dataset: str, version: str, key_column: str, key: str, columns: Sequence[str]
    ) -> list[tuple[Any, ...]]:
        """Rows whose `key_column` equals `key`, from an in-memory index of the version when the
        dataset has at most `index_max_rows` rows (point lookups in DuckDB cost about 0.5 ms
        each; a dict lookup costs microseconds), else from DuckDB."""
        slot = (dataset, key_column, tuple(columns))
        held = self._indexes.get(slot)
        if held is None or held[0] != version:
            with self._index_lock:
                held = self._indexes.get(slot)
                if held is None or held[0] != version:
                    with self.snapshot(dataset, version) as snap:
                        small = snap.count_rows() <= self._index_max_rows
                        held = (version, snap.key_index(key_column, columns) if small else None)
                    self._indexes[slot] = held  # replaces the index of an older version
        if held[1] is None:
            with self.snapshot(dataset, version) as snap:
                return snap.lookup(key_column, key, columns)
        return list(held[1].get(key, ()))

    def in_memory(self, dataset: str, version: str, key_column: str, columns: Sequence[str]) -> bool:
        """Whether `find` with these would be a dict lookup (microseconds, fine on an event loop)
        rather than an index build or a DuckDB query (to be run in a thread)."""
        held = self._indexes.get((dataset, key_column, tuple(columns)))
        return held is not None and held[0] == version and held[1] is not None

    def indexed(self) -> list[tuple[str, str, str, tuple[str, ...]]]:
        """The lookup indexes held: (dataset, version, key column, columns)."""
        return [(dataset, held[0], key, columns) for (dataset, key, columns), held in self._indexes.items()]

    @contextmanager
    def snapshot(self, dataset: str, version: str) -> Iterator[Snapshot]:
        key = (dataset, version)
        with self._lock:
            held = self._open.get(key)
            if held is None:
                held = _OpenVersion(self._connect(dataset, version))
                for (other_ds, other_v), other in list(self._open.items()):
                    if other_ds == dataset and other_v != version:
                        other.retired = True
                        if other.users == 0:
                            other.connection.close()
                            del self._open[(other_ds, other_v)]
                self._open[key] = held
            held.users += 1
            cursor = held.connection.cursor()
        try:
            yield Snapshot(cursor, dataset, version, self._value_checks)
        finally:
            cursor.close()
            with self._lock:
                held.users -= 1
                if held.retired and held.users == 0:
                    held.connection.close()
                    self._open.pop(key, None)

    def _connect(self, dataset: str, version: str) -> duckdb.DuckDBPyConnection:
        path = version_path(self._data_dir, dataset, version)
        if not path.is_file():
            raise NotFound("dataset: no data for its registered version")
        config = dict(SERVING_CONFIG)
        config["threads"] = self._threads
        try:
            return duckdb.connect(str(path), read_only=True, config=config)
        except duckdb.Error as exc:
            raise DependencyError("the data domain cannot be opened") from exc

    def close(self) -> None:
        self._indexes.clear()
        with self._lock:
            for held in self._open.values():
                held.connection.close()
            self._open.clear()
