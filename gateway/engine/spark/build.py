"""Building a Spark dataset version: the checks and the contribution bound of `engine.build`,
run by Spark on Parquet, written as Parquet beside (or far from) the gateway.

Steps: (1) read the source (a Parquet file or directory: a local path, hdfs://, s3a://);
(2) check columns, values and key formats as DuckDB registration does, with the same messages, and in the
pass of the value checks fingerprint the rows (count and sums of two 64-bit row hashes,
computed by the executors) to name the version; (3) keep at most `max_rows` rows per privacy
unit in the same order as DuckDB (keep_first_by, then every column, NULLs last) and write
them to `<warehouse>/<dataset>/<version>.parquet`; (4) check the rows written: values, key
formats and the bound, on what will be served; (5) fingerprint the source again (refused if it
changed) and commit by writing the marker `<data_dir>/domain/<dataset>/<version>.spark.json`
atomically: nothing serves a Spark version without its marker.

SECURITY: Spark reads a source lazily, once per pass. A source swapped between the checks'
pass and the write's, then swapped back before step 5, gave a version whose rows no check saw
(values outside the declared bounds break the noise's sensitivity). Step 4 checks the written
rows themselves, so whatever the source held during the write, what is served passed the
checks.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pyspark.errors import PySparkException
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from gateway.atomic_files import write_atomic
from gateway.domain.canonical_json import canonical
from gateway.domain.catalog import CatalogEntry, ColumnType
from gateway.domain.identifiers import KEY_FORMATS
from gateway.engine.build import BuildLimits, BuildReport, ProgressFn, marker_path
from gateway.engine.checks import schema_problems
from gateway.engine.spark.session import spark_session
from gateway.errors import RegistrationError

_SPARK_TYPE = {
    ColumnType.STRING: "string",
    ColumnType.INTEGER: "bigint",
    ColumnType.FLOAT: "double",
    ColumnType.BOOLEAN: "boolean",
    ColumnType.DATE: "date",
}
_DUCKDB_NAME: dict[type[T.DataType], str] = {
    T.StringType: "VARCHAR",
    T.ByteType: "TINYINT",
    T.ShortType: "SMALLINT",
    T.IntegerType: "INTEGER",
    T.LongType: "BIGINT",
    T.FloatType: "FLOAT",
    T.DoubleType: "DOUBLE",
    T.BooleanType: "BOOLEAN",
    T.DateType: "DATE",
}


def build_spark_version(
    entry: CatalogEntry, source: str, data_dir: Path, *, limits: BuildLimits, progress: ProgressFn
) -> BuildReport:
    """Check `source` against `entry`, bound contributions and write a Spark version."""
    session = spark_session(limits.spark_master)
    try:
        progress("reading source")
        frame = session.read.parquet(source)
        progress("checking columns and types")
        found = {field.name: _duckdb_name(field.dataType) for field in frame.schema.fields}
        problems = schema_problems(entry, found, is_csv=False)
        if problems:
            raise RegistrationError("; ".join(problems))
        progress("checking values against the catalogue and fingerprinting the source")
        fingerprint = _check_values(frame, entry)
        _check_key_formats(frame, entry)
        digest = hashlib.sha256(canonical(entry.model_dump(mode="json")))
        digest.update(json.dumps(fingerprint).encode())
        version = digest.hexdigest()[:32]
        marker = marker_path(data_dir, entry.dataset, version)
        if marker.exists():
            held = json.loads(marker.read_text())
            return BuildReport(version, marker, int(held["rows"]), int(held["dropped"]), unchanged=True)
        progress("enforcing the contribution bound")
        warehouse = limits.spark_warehouse or str((data_dir / "domain").resolve())
        location = f"{warehouse.rstrip('/')}/{entry.dataset}/{version}.parquet"
        _bounded(frame, entry).write.mode("overwrite").parquet(location)
        progress("checking the rows written")
        kept = _check_written(session.read.parquet(location), entry)
        progress("checking the source did not change")
        if _fingerprint(session.read.parquet(source), entry) != fingerprint:
            raise RegistrationError("the source changed while it was registered; register it again")
    except PySparkException as exc:
        raise RegistrationError(f"the spark engine refused the source ({type(exc).__name__})") from None
    total = int(fingerprint[0])
    marker.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(marker, json.dumps({"location": location, "rows": kept, "dropped": total - kept}).encode())
    return BuildReport(version, marker, kept, total - kept, unchanged=False)


def _duckdb_name(data_type: T.DataType) -> str:
    """A Spark type as DuckDB spells it, so that the same accepted-types table applies."""
    if isinstance(data_type, T.DecimalType):
        return f"DECIMAL({data_type.precision},{data_type.scale})"
    return str(_DUCKDB_NAME.get(type(data_type), data_type.simpleString().upper()))  # Any without pyspark


def _check_values(frame: DataFrame, entry: CatalogEntry) -> list[str]:
    """The value checks of `engine.checks.check_values` (Parquet form) and the source's
    fingerprint, in one aggregation: one pass over the source instead of two."""
    checks: list[tuple[str, Column]] = []
    for col in entry.columns:
        value = F.col(col.name)
        if not col.nullable:
            checks.append((f"column {col.name}: missing values in a non-nullable column", value.isNull()))
        if col.type is ColumnType.FLOAT:
            as_double = value.cast("double")
            infinite = F.isnan(as_double) | (F.abs(as_double) == F.lit(float("inf")))
            checks.append((f"column {col.name}: NaN or infinite values", value.isNotNull() & infinite))
        if col.bounds is not None:
            low, high = col.bounds
            outside = (value < F.lit(low)) | (value > F.lit(high))
            if col.type is ColumnType.FLOAT:  # DuckDB orders NaN above every number: outside too
                outside = outside | F.isnan(value.cast("double"))
            checks.append(
                (f"column {col.name}: values outside the bounds [{low:g}, {high:g}]", value.isNotNull() & outside)
            )
        if col.categories is not None:
            checks.append(
                (
                    f"column {col.name}: values outside the public category list",
                    value.isNotNull() & ~value.isin(list(col.categories)),
                )
            )
    counted = [F.sum(F.when(cond, 1).otherwise(0)) for _, cond in checks]
    row = frame.agg(*counted, *_fingerprint_columns(entry)).first()
    values: list[Any] = [None] * (len(checks) + 3) if row is None else list(row)
    counts = [int(v or 0) for v in values[: len(checks)]]
    problems = [f"{label} ({count} row(s))" for (label, _), count in zip(checks, counts, strict=True) if count]
    if problems:
        raise RegistrationError("; ".join(problems))
    return [str(v if v is not None else 0) for v in values[len(checks) :]]


def _check_written(written: DataFrame, entry: CatalogEntry) -> int:
    """The rows a version will serve pass the value and key checks and keep the bound, whatever
    the source held while they were written; returns how many there are."""
    rows = int(_check_values(written, entry)[0])
    _check_key_formats(written, entry)
    unit = entry.privacy_unit
    most = written.groupBy(unit.column).count().agg(F.max("count")).first()
    if most is not None and most[0] is not None and int(most[0]) > unit.max_rows:
        raise RegistrationError(
            f"privacy_unit: the rows written exceed max_rows ({unit.max_rows}) for some unit; register it again"
        )
    return rows


def _check_key_formats(frame: DataFrame, entry: CatalogEntry) -> None:
    problems: list[str] = []
    for col in entry.columns:
        if col.key_format is None:
            continue
        is_valid = KEY_FORMATS[col.key_format]
        distinct = frame.select(col.name).where(F.col(col.name).isNotNull()).distinct()
        # Streamed partition by partition: the driver never holds every distinct key.
        # The next partition is computed while this one is checked.
        bad = sum(1 for row in distinct.toLocalIterator(prefetchPartitions=True) if not is_valid(row[0]))
        if bad:
            problems.append(f"column {col.name}: {bad} distinct value(s) are not valid {col.key_format} keys")
    if problems:
        raise RegistrationError("; ".join(problems))


def _fingerprint_columns(entry: CatalogEntry) -> list[Column]:
    """Rows, and the sums of two 64-bit hashes of every row (order does not matter): a changed,
    added or removed row changes them."""
    columns = [F.col(c.name) for c in entry.columns]
    first = F.xxhash64(*columns).cast("decimal(38,0)")
    second = F.hash(*columns).cast("decimal(38,0)")
    return [F.count(F.lit(1)), F.sum(first), F.sum(second)]


def _fingerprint(frame: DataFrame, entry: CatalogEntry) -> list[str]:
    row = frame.agg(*_fingerprint_columns(entry)).first()
    return ["0", "0", "0"] if row is None else [str(v if v is not None else 0) for v in row]


def _bounded(frame: DataFrame, entry: CatalogEntry) -> DataFrame:
    """At most max_rows rows per unit, chosen in DuckDB registration's order, typed as catalogued."""
    unit = entry.privacy_unit
    order = [
        F.col(t.column).desc_nulls_last() if t.descending else F.col(t.column).asc_nulls_last()
        for t in unit.keep_first_by
    ]
    order += [F.col(c.name).asc_nulls_last() for c in entry.columns]
    window = Window.partitionBy(F.col(unit.column)).orderBy(*order)
    ranked = frame.withColumn("_rank", F.row_number().over(window)).where(F.col("_rank") <= F.lit(unit.max_rows))
    return ranked.select(*[F.col(c.name).cast(_SPARK_TYPE[c.type]).alias(c.name) for c in entry.columns])
