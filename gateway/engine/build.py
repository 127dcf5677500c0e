"""Building a dataset version file from a source file: checks, contribution bound, key tables.

A version file is written under a temporary name and renamed into place complete; nothing is
written under the final name unless every check passed.

Memory is bounded, not proportional to rows: every step is a DuckDB query over the source
(a Parquet file is read where it lies, never copied into memory first) under a memory limit,
and what does not fit (the sort behind the contribution bound, the DISTINCT behind the key
checks) spills to a temporary directory. A source that changes while it is read is refused:
the version is the hash of the bytes, so the bytes must not move under it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb

from gateway.atomic_files import fsync_path, write_atomic
from gateway.domain.canonical_json import canonical
from gateway.domain.catalog import CatalogEntry, Column, ColumnType
from gateway.engine.checks import check_schema, check_values, invalid_keys, key_problems
from gateway.engine.sql import COUNT_SQL, SQL_TYPE, TABLE, hash_column, index_table, quote, scalar_int
from gateway.errors import InternalError, RegistrationError

ProgressFn = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class BuildLimits:
    """What building a version may use: DuckDB's memory limit (e.g. "2GB"), the directory it
    spills to beyond it (None: `<data_dir>/domain/.spill`), and its threads (None: all cores);
    for a dataset on the Spark engine, the Spark master and where versions are written (None:
    `<data_dir>/domain`; an hdfs:// or s3a:// URI for a cluster)."""

    memory_limit: str = "2GB"
    temp_directory: Path | None = None
    threads: int | None = None
    spark_master: str = "local[*]"
    spark_warehouse: str | None = None


@dataclass(frozen=True, slots=True)
class BuildReport:
    version: str
    path: Path
    rows: int
    rows_dropped_by_contribution_bound: int
    unchanged: bool


_GLOB = re.compile(r"[*?\[\]{}]")
"""Characters DuckDB's readers take as a file pattern."""
UNITS = "_units"
"""A temporary table of the built table's units and their row counts (`_check_units`): the
bound's check and the unit key's check read it, so the table is grouped by unit once, not twice."""


def content_version(entry: CatalogEntry, source: Path) -> str:
    """SHA-256 over the canonical catalogue entry and the source file's bytes. The default
    engine is left out of the entry, so versions named before it existed keep their names."""
    digest = hashlib.sha256(canonical(entry.model_dump(mode="json", exclude={"engine"})))
    with source.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:32]


def _identity(source: Path) -> tuple[int, int, int, int, int]:
    """What changes when a file is rewritten or replaced: device, inode, size, modification time
    and change time. SECURITY: its owner can set the modification time back (`touch -d`), so a
    file rewritten between the checks and the write, then put back, kept it; no user can set
    the change time."""
    stat = source.stat()
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


def marker_path(data_dir: Path, dataset: str, version: str) -> Path:
    """Where a Spark version is committed: a small JSON file naming its Parquet location."""
    return data_dir / "domain" / dataset / f"{version}.spark.json"


def version_path(data_dir: Path, dataset: str, version: str) -> Path:
    return data_dir / "domain" / dataset / f"{version}.duckdb"


def build_version(
    entry: CatalogEntry,
    source: Path | str,
    data_dir: Path,
    *,
    progress: ProgressFn = lambda _step: None,
    limits: BuildLimits = BuildLimits(),
) -> BuildReport:
    """Check `source` against `entry`, bound contributions, index, and write a version file.

    Nothing is written under the final name unless every check passed. A dataset on the Spark
    engine is built by Spark (`engine.spark.build`); `source` may then be an hdfs:// or s3a:// URI.
    """
    if entry.engine == "spark":
        from gateway.engine.spark.build import build_spark_version  # noqa: PLC0415 - optional extra

        return build_spark_version(entry, str(source), data_dir, limits=limits, progress=progress)
    source = Path(source)
    if _GLOB.search(source.name) or _GLOB.search(str(source.parent)):
        # SECURITY: DuckDB reads a path with these as a pattern, so the version would hold
        # other files than the one hashed and checked for changes.
        raise RegistrationError("source: a path without * ? [ ] { } (DuckDB reads those as a pattern)")
    if not source.is_file():
        raise RegistrationError(f"source file {source.name} does not exist")
    suffix = source.suffix.lower()
    if suffix not in {".parquet", ".csv"}:
        raise RegistrationError("source must be a .parquet or .csv file")
    _memory_bytes(limits.memory_limit)  # refused before any work, not after the checks
    progress("hashing source")
    before = _identity(source)
    version = content_version(entry, source)
    final = version_path(data_dir, entry.dataset, version)
    report_file = final.with_suffix(".json")
    if final.exists() and report_file.exists():
        counts = json.loads(report_file.read_text())
        return BuildReport(version, final, int(counts["rows"]), int(counts["dropped"]), unchanged=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    building = final.with_name(f".building-{version}-{os.getpid()}.duckdb")
    building.unlink(missing_ok=True)
    spill = limits.temp_directory or data_dir / "domain" / ".spill"
    spill.mkdir(parents=True, exist_ok=True)
    config: dict[str, str | bool | int | float | list[str]] = {
        "memory_limit": limits.memory_limit,
        "temp_directory": str(spill),
    }
    if limits.threads is not None:
        config["threads"] = limits.threads
    try:
        con = duckdb.connect(str(building), config=config)
        try:
            report = _build_into(con, entry, source, suffix == ".csv", progress, memory_limit=limits.memory_limit)
            con.execute("CHECKPOINT")
        finally:
            con.close()
        if _identity(source) != before:
            raise RegistrationError(f"source file {source.name} changed while it was registered; register it again")
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
    *,
    memory_limit: str,
) -> tuple[int, int]:
    progress("loading source")
    # `src_rows` adds each row's position (`file_row_number`): a filter on it reads only that
    # part of the source (Parquet row groups, or the temporary table's row ids).
    if is_csv:  # parsed once into a temporary table, which spills beyond the memory limit
        con.execute(
            "CREATE TEMP TABLE src AS SELECT * FROM read_csv($1, header = true, all_varchar = true)",
            [str(source)],
        )
        con.execute("CREATE TEMP VIEW src_rows AS SELECT *, rowid AS file_row_number FROM src")
    else:  # read where it lies, by every step: a Parquet scan is as fast as a table scan
        con.read_parquet(str(source)).create_view("src")
        con.read_parquet(str(source), file_row_number=True).create_view("src_rows")
    progress("checking columns and types")
    check_schema(con, entry, is_csv)
    progress("checking values against the catalogue")
    check_values(con, entry, is_csv)
    unit = entry.privacy_unit
    keyed = [c for c in entry.columns if c.key_format is not None]
    bad = {c.name: invalid_keys(con, c, "src", is_csv) for c in keyed if c.name != unit.column}
    total = scalar_int(con, "SELECT count(*) FROM src")
    progress("enforcing the contribution bound")
    passes = _passes(total, len(entry.columns), memory_limit)
    _bound_and_sort(con, entry, is_csv, rows=total, passes=passes)
    kept = scalar_int(con, COUNT_SQL)
    bad |= _check_units(con, entry, is_csv)
    if problems := key_problems(entry, bad):  # the file is still under its temporary name
        raise RegistrationError("; ".join(problems))
    progress("building lookup indexes")
    # The table is sorted by its first lookup key (or that key's hash), so DuckDB's zone maps find
    # its rows without an index. Every other text key gets a narrow table of (hash of the key,
    # row id) sorted by the hash, in as many passes (sorted runs) as the table: at 10 M rows
    # 0.45 s to build against 0.7 sorted by the key and 2.0-2.4 for an ART index (100 M rows:
    # 8.6-8.7 s in four passes, 9.1-9.7 in two, 11-13 in one), and it found a 2,000-row key in
    # 3.7-5 ms against 10. Only text columns are looked up (the policy check refuses the others).
    for key in entry.lookup_keys[1:]:
        if entry.column(key).type is ColumnType.STRING:
            # SECURITY: DDL cannot bind identifiers; `key` is a catalogue name, checked and quoted.
            written = (
                f"SELECT hash({quote(key)}) AS h, rowid AS r FROM {TABLE}"  # noqa: S608
                f" WHERE {quote(key)} IS NOT NULL AND rowid BETWEEN $1 AND $2 ORDER BY h"
            )
            _write_in_passes(con, index_table(key), written, kept, passes)
    con.execute("DROP VIEW src_rows")
    con.execute("DROP TABLE src" if is_csv else "DROP VIEW src")
    return kept, total - kept


def _bound_and_sort(
    con: duckdb.DuckDBPyConnection, entry: CatalogEntry, is_csv: bool, *, rows: int, passes: int
) -> None:
    """Write the version's table: at most max_rows rows per unit, sorted by the first lookup key
    (by its stored hash if it is text) or, without lookup keys, by the unit's hash.

    Per unit, rows are ordered by keep_first_by, then by every other column (values as typed
    by the catalogue), and the first max_rows are kept. The unit's own column is one value per
    unit and a keep_first_by column is tied only where equal, so neither can change the order.
    Rows equal in every column are interchangeable, so the kept rows are a function of the file
    (up to the sign of a zero: DuckDB orders 0.0 and -0.0 as equal, and so does every check,
    lookup and aggregate).
    Their order in the table is not: lookups order what they return (snapshot.lookup).

    Only the units above the bound need a rank: they are found by one hash aggregate (of the
    units' 64-bit hashes: a collision only ranks a unit that keeps every row anyway), and only
    their rows go through a window partitioned by the unit, which lists the source positions of
    the rows it drops; every pass then reads its part of the source and leaves those out.
    At 10 M rows (DuckDB 2.0): 3.7 s (0.4 to find the units above the bound, 0.55 to rank their
    rows, 2.5-2.8 to sort by the hash and write) against 14 s (DuckDB 1.x) for a rank by position
    after the sort (a window with an empty OVER runs on one thread), and 18 s of CPU for a window
    over every row followed by a second sort.

    The table is written in passes over consecutive parts of the source, each small enough to
    sort within the memory limit: one sorted run a pass, in which zone maps find a key's rows
    (one row group a run). At 100 M rows and 2 GB, in four passes: docs/operations.md.
    """
    unit = entry.privacy_unit
    casts = ", ".join(f"{_cast(quote(c.name), c, is_csv)} AS {quote(c.name)}" for c in entry.columns)
    unit_column = quote(unit.column)
    unit_cast = _cast(unit_column, entry.column(unit.column), is_csv)
    order_terms = [f"{quote(t.column)} {'DESC' if t.descending else 'ASC'} NULLS LAST" for t in unit.keep_first_by]
    settled = {unit.column, *(t.column for t in unit.keep_first_by)}
    order_terms += [f"{quote(c.name)} ASC NULLS LAST" for c in entry.columns if c.name not in settled]
    order = ", ".join(order_terms)
    first = entry.lookup_keys[0] if entry.lookup_keys else None
    hashed = ""
    if first is None:  # nobody looks rows up: the hash clusters each unit's rows, for compression
        sort_keys = f"hash({unit_column})"
    elif entry.column(first).type is ColumnType.STRING:
        # Text keys often share long prefixes (a resident id's first six characters name a
        # county), and DuckDB's sort then compares whole strings: sorting by a stored 64-bit hash
        # of the key took 2.5-2.8 s at 10 M rows against 3.5-4.1 by the key itself, and finds a
        # key's rows as fast (0.65 ms). Which hash it is must not matter: see snapshot.column_facts.
        hashed = f", hash({quote(first)}) AS {hash_column(first)}"
        sort_keys = hash_column(first)
    else:  # numbers and dates sort as fast as their hash
        sort_keys = quote(first)
    # SECURITY: every name below is a catalogue name quoted by quote(); max_rows and the row
    # positions are bound. A NULL unit is one unit, as PARTITION BY takes it (and hash(NULL) is a
    # value, not NULL): the join matches units' hashes with IS NOT DISTINCT FROM. Separate
    # statements: a window and a sort in one plan ran out of a small memory limit where each
    # alone spills. Only the positions (`_row`) of the rows the bound drops are kept: each pass
    # reads its part of the source and leaves those out. The window is partitioned by the unit's
    # hash and the unit (the same partitions): units sharing a long prefix then rarely need a
    # string comparison (100 M rows: 10.6-10.8 s against 11.4-11.6).
    typed = f"(SELECT {casts}, file_row_number AS _row FROM src_rows) AS r"  # noqa: S608 - quoted names
    con.execute(
        f"CREATE TEMP TABLE _over AS SELECT hash({unit_cast}) AS h FROM src GROUP BY 1 HAVING count(*) > $1",  # noqa: S608
        [unit.max_rows],
    )
    con.execute(
        "CREATE TEMP TABLE _dropped AS SELECT _row FROM ("  # noqa: S608
        f" SELECT _row, row_number() OVER (PARTITION BY hash({unit_column}), {unit_column} ORDER BY {order}) AS _rank"
        f" FROM (SELECT r.* FROM {typed} SEMI JOIN _over ON hash(r.{unit_column}) IS NOT DISTINCT FROM _over.h)"
        ") WHERE _rank > $1",
        [unit.max_rows],
    )
    part = (
        f"SELECT r.* FROM {typed} ANTI JOIN (SELECT _row FROM _dropped WHERE _row BETWEEN $1 AND $2) AS d"  # noqa: S608
        " ON r._row = d._row WHERE r._row BETWEEN $1 AND $2"
    )
    written = f"SELECT * EXCLUDE (_row){hashed} FROM ({part}) ORDER BY {sort_keys}"  # noqa: S608
    _write_in_passes(con, TABLE, written, rows, passes)
    con.execute("DROP TABLE _over; DROP TABLE _dropped")


def _check_units(con: duckdb.DuckDBPyConnection, entry: CatalogEntry, is_csv: bool) -> dict[str, int]:
    """Count the written table's rows per unit once: a unit above max_rows is a bug, and the
    same list of units gives the unit column's invalid keys where it has a key format."""
    unit = entry.privacy_unit
    column = entry.column(unit.column)
    # SECURITY: the bound is checked on the table as written, whatever plan DuckDB chose for the
    # statements that wrote it: every unit's rows counted, whichever passes they were written in.
    # UNITS and TABLE are constants, the unit's name a catalogue name quoted by quote(), max_rows bound.
    con.execute(f"CREATE TEMP TABLE {UNITS} AS SELECT {quote(unit.column)}, count(*) AS _n FROM {TABLE} GROUP BY 1")  # noqa: S608
    try:
        if scalar_int(con, f"SELECT count(*) FROM {UNITS} WHERE _n > $1", [unit.max_rows]):  # noqa: S608
            raise InternalError("the contribution bound did not hold in a built version (this is a bug)")
        return {column.name: invalid_keys(con, column, UNITS, is_csv)} if column.key_format is not None else {}
    finally:
        con.execute(f"DROP TABLE {UNITS}")  # a constant name


def _write_in_passes(con: duckdb.DuckDBPyConnection, table: str, written: str, rows: int, passes: int) -> None:
    """Create `table` from `written`, a sorted SELECT of the rows at positions $1 to $2, one pass
    a consecutive part: one sorted run each, and no sort larger than a pass."""
    step = -(-rows // passes) if rows else 1
    for i in range(passes):
        head = f"CREATE TABLE {table} AS" if i == 0 else f"INSERT INTO {table}"
        # SECURITY: `table` is TABLE or index_table() of a catalogue name, `written` is built from
        # names quoted by quote() only (DDL cannot bind identifiers); the row positions are bound.
        con.execute(f"{head} {written}", [i * step, (i + 1) * step - 1])


_BYTES = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
MAX_PASSES = 16
"""Each pass is one more sorted run a lookup reads (a row group each) and one more statement."""


def _memory_bytes(memory_limit: str) -> int:
    """`registration_memory_limit` in bytes (the units of Settings' pattern, as DuckDB reads them)."""
    found = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?B)", memory_limit.strip())
    if found is None:
        raise RegistrationError("registration_memory_limit: a size such as 2GB or 512MiB")
    return int(float(found[1]) * _BYTES[found[2]])


def _passes(rows: int, columns: int, memory_limit: str) -> int:
    """How many passes write a version: each sorts about 10 bytes a column of a row within the
    memory limit (25 M rows of 8 columns in 2 GB), at most MAX_PASSES."""
    rows_a_pass = max(1, _memory_bytes(memory_limit) // (10 * (columns + 1)))
    return min(MAX_PASSES, max(1, -(-rows // rows_a_pass)))


def _cast(expr: str, column: Column, is_csv: bool) -> str:
    sql_type = SQL_TYPE[column.type]
    if is_csv and column.type is ColumnType.STRING:
        return f"NULLIF({expr}, '')"
    return f"CAST({expr} AS {sql_type})"
