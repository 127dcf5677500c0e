"""Serving side of the data domain: read-only connections, one per open version.

A snapshot keeps its connection open until it ends, so a request in flight finishes on the
version it started on while new requests see the new one.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from gateway.engine.build import marker_path, version_path
from gateway.engine.snapshot import Snapshot, VersionFacts, column_facts
from gateway.errors import DependencyError, NotFound

if TYPE_CHECKING:
    from gateway.engine.spark.snapshot import SparkSnapshot

SERVING_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "lock_configuration": True,
}


class _OpenVersion:
    def __init__(self, connection: duckdb.DuckDBPyConnection) -> None:
        self.connection = connection
        self.users = 0
        self.retired = False
        self.facts: VersionFacts | None = None
        """Its numeric columns' ranges and lookup layout, read by its first snapshot (whatever that one is for)."""


class Domain:
    """Serving side of the data domain: read-only connections, one per open version."""

    def __init__(
        self, data_dir: Path, *, threads: int = 2, index_max_rows: int = 2_000_000, spark_master: str = "local[*]"
    ) -> None:
        self._data_dir = data_dir
        self._spark_master = spark_master
        self._threads = threads
        self._open: dict[tuple[str, str], _OpenVersion] = {}
        self._lock = threading.Lock()
        self._index_max_rows = index_max_rows
        self._indexes: dict[tuple[str, str, tuple[str, ...]], tuple[str, dict[str, list[tuple[Any, ...]]] | None]] = {}
        self._index_lock = threading.Lock()

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

    def with_facts(self) -> list[tuple[str, str]]:
        """The open versions whose column facts were read: (dataset, version)."""
        with self._lock:
            return [key for key, held in self._open.items() if held.facts is not None]

    def indexed(self) -> list[tuple[str, str, str, tuple[str, ...]]]:
        """The lookup indexes held: (dataset, version, key column, columns)."""
        return [(dataset, held[0], key, columns) for (dataset, key, columns), held in self._indexes.items()]

    @contextmanager
    def snapshot(self, dataset: str, version: str) -> Iterator[Snapshot | SparkSnapshot]:
        """The version for one request: a DuckDB file, or a Spark version (by its marker)."""
        marker = marker_path(self._data_dir, dataset, version)
        if not version_path(self._data_dir, dataset, version).is_file() and marker.is_file():
            yield self._spark_snapshot(marker, dataset, version)
            return
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
            if held.facts is None:  # two first snapshots at once both read them: the same facts
                try:
                    held.facts = column_facts(cursor)
                except duckdb.Error as exc:
                    raise DependencyError("the data domain cannot be read") from exc
            yield Snapshot(cursor, dataset, version, held.facts)
        finally:
            cursor.close()
            with self._lock:
                held.users -= 1
                if held.retired and held.users == 0:
                    held.connection.close()
                    self._open.pop(key, None)

    def _spark_snapshot(self, marker: Path, dataset: str, version: str) -> SparkSnapshot:
        from gateway.engine.spark.session import spark_session  # noqa: PLC0415 - optional extra
        from gateway.engine.spark.snapshot import SparkSnapshot  # noqa: PLC0415 - optional extra

        location = str(json.loads(marker.read_text())["location"])
        return SparkSnapshot(spark_session(self._spark_master), location, dataset, version)

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
