"""Building a dataset version file from a source file: checks, contribution bound, indexes.

A version file is written under a temporary name and renamed into place complete; nothing is
written under the final name unless every check passed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import rfc8785

from gateway.atomic_files import fsync_path, write_atomic
from gateway.domain.catalog import CatalogEntry, Column, ColumnType
from gateway.engine.checks import check_key_formats, check_schema, check_values
from gateway.engine.sql import COUNT_SQL, SQL_TYPE, TABLE, quote, scalar_int
from gateway.errors import RegistrationError

ProgressFn = Callable[[str], None]


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
    check_schema(con, entry, is_csv)
    progress("checking values against the catalogue")
    check_values(con, entry, is_csv)
    check_key_formats(con, entry, is_csv)
    total = scalar_int(con, "SELECT count(*) FROM src")
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
    kept = scalar_int(con, COUNT_SQL)
    progress("building lookup indexes")
    for key in entry.lookup_keys:
        # SECURITY: DDL cannot bind identifiers; `key` is a catalogue name, checked and quoted by quote().
        con.execute(f"CREATE INDEX {quote('idx_' + key)} ON {TABLE} ({quote(key)})")
    con.execute("DROP TABLE src")
    return kept, total - kept


def _cast(expr: str, column: Column, is_csv: bool) -> str:
    sql_type = SQL_TYPE[column.type]
    if is_csv and column.type is ColumnType.STRING:
        return f"NULLIF({expr}, '')"
    return f"CAST({expr} AS {sql_type})"
