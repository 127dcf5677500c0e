"""One Spark dataset version for the length of one request: the plan-based part of a snapshot.

A Spark version serves aggregates (exact statistics of a plan, observed keys for DP key
selection) and its row count; lookups, model fits, job exports and cross tables stay with
DuckDB, whose serving connection is locked down for them, and are refused here by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from pyspark.sql import SparkSession

from gateway.domain.aggregate import Plan
from gateway.engine.plan_results import ExactStatistics, exact_statistics, observed_counts
from gateway.engine.spark.plans import aggregate_frame
from gateway.errors import DependencyError


class SparkSnapshot:
    """The version's bounded Parquet at `location`, read by the shared session."""

    def __init__(self, session: SparkSession, location: str, dataset: str, version: str) -> None:
        self._frame = session.read.parquet(location)
        self.dataset = dataset
        self.version = version

    def count_rows(self) -> int:
        return int(self._frame.count())

    def aggregate(self, plan: Plan) -> ExactStatistics:
        """The exact statistics a plan names, as `Snapshot.aggregate` returns them. The rows
        come back to the driver grouped (one per cell and bin), never row by row."""
        return exact_statistics(plan, [tuple(row) for row in aggregate_frame(self._frame, plan).collect()])

    def grouped_counts(self, plan: Plan) -> dict[tuple[str, ...], int]:
        """Exact row counts per group key observed in the data, for DP key selection only."""
        return observed_counts(plan, [tuple(row) for row in aggregate_frame(self._frame, plan).collect()])

    def lookup(self, key_column: str, key: str, columns: Sequence[str]) -> list[tuple[Any, ...]]:
        _refuse("lookups")

    def key_index(self, key_column: str, columns: Sequence[str]) -> dict[str, list[tuple[Any, ...]]]:
        _refuse("lookups")

    def export(self, target: Path, columns: Sequence[str]) -> int:
        _refuse("job exports")

    def cross_products(self, columns: Sequence[tuple[str, float, float]], units: int) -> tuple[list[int], int]:
        _refuse("model fits")

    def cross_tab(
        self, keys: Sequence[str], filters: Sequence[tuple[str, Sequence[Any]]], unit: str | None
    ) -> dict[tuple[Any, ...], int]:
        _refuse("output checks of jobs")

    def pair_counts(self, first: str, second: str) -> dict[tuple[Any, Any], int]:
        _refuse("model fits")


def _refuse(what: str) -> NoReturn:
    raise DependencyError(f"the spark engine serves aggregates only; {what} need a dataset on the duckdb engine")
