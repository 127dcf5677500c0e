"""Catalogue entry types and the rules that follow from them.

A catalogue entry is the public description of one dataset: who holds it, how it is
classified, its columns with type, sensitivity, bounds and public categories, and its
privacy unit with the most rows one unit may contribute. Registration checks data against
it; serving builds SQL only from identifiers it names.

These are pydantic models (frozen, unknown fields forbidden) rather than dataclasses plus a
parallel parsing schema: one definition validates YAML at the edge and is the value the
rest of the code passes around. No I/O here.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.domain.names import Identifier as Identifier  # noqa: PLC0414 - re-exported


class Level(StrEnum):
    """GB/T 43697-2024 data levels."""

    GENERAL = "general"
    IMPORTANT = "important"
    CORE = "core"


class Sensitivity(StrEnum):
    PUBLIC = "public"
    IDENTIFIER = "identifier"
    PERSONAL = "personal"
    COMMERCIAL_SECRET = "commercial_secret"  # noqa: S105 - a sensitivity class name


class ColumnType(StrEnum):
    STRING = "string"
    INTEGER = "integer"
    FLOAT = "float"
    BOOLEAN = "boolean"
    DATE = "date"


NUMERIC_TYPES = frozenset({ColumnType.INTEGER, ColumnType.FLOAT})


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


ROW_POSITION_NAMES = frozenset({"rowid", "file_row_number"})
"""DuckDB's names for a row's position in a table and in a Parquet file: a column of either name
would hide the position by which registration drops rows over the bound and key tables name rows."""


class Column(_Frozen):
    name: Identifier
    type: ColumnType
    sensitivity: Sensitivity
    description: str = ""
    nullable: bool = False
    bounds: tuple[float, float] | None = None
    categories: tuple[str, ...] | None = None
    key_format: Literal["uscc", "resident_id"] | None = None

    @model_validator(mode="after")
    def _check(self) -> Column:
        if self.name in ROW_POSITION_NAMES:
            raise ValueError(
                f"column {self.name}: a name DuckDB gives row positions (rowid, file_row_number); rename it"
            )
        if self.bounds is not None:
            if self.type not in NUMERIC_TYPES:
                raise ValueError(f"column {self.name}: bounds are only for numeric columns")
            low, high = self.bounds
            if not low <= high:
                raise ValueError(f"column {self.name}: lower bound exceeds upper bound")
        if self.categories is not None:
            if self.type is not ColumnType.STRING:
                raise ValueError(f"column {self.name}: categories are only for string columns")
            if len(set(self.categories)) != len(self.categories) or not self.categories:
                raise ValueError(f"column {self.name}: categories must be non-empty and unique")
        if self.key_format is not None and self.type is not ColumnType.STRING:
            raise ValueError(f"column {self.name}: key_format is only for string columns")
        return self


class Classification(_Frozen):
    domain: str = Field(min_length=1)
    category: str = Field(min_length=1)


class OrderTerm(_Frozen):
    column: Identifier
    descending: bool = False


class PrivacyUnit(_Frozen):
    column: Identifier
    max_rows: int = Field(ge=1, le=10_000)
    keep_first_by: tuple[OrderTerm, ...] = ()
    """Rows beyond `max_rows` are dropped: per unit, rows are ordered by these terms, then by
    every column in catalogue order, and only the first `max_rows` are kept."""


class CatalogEntry(_Frozen):
    dataset: Identifier
    registration_code: str = Field(min_length=1, max_length=64)
    title: str = Field(min_length=1)
    description: str = ""
    owner_body: str = Field(min_length=1)
    source_system: str = Field(min_length=1)
    classification: Classification
    level: Level
    privacy_unit: PrivacyUnit
    lookup_keys: tuple[Identifier, ...] = ()
    """Text columns that verification and scoring look entities up by: the version is sorted by
    the first (by its hash), and every other text one gets a table of (hash, row id)."""
    columns: tuple[Column, ...] = Field(min_length=1)
    engine: Literal["duckdb", "spark"] = "duckdb"
    """Which engine holds and queries the data: DuckDB on this machine (the default), or Spark
    on Parquet (local, hdfs:// or s3a:// paths) for data beyond one machine. Same plans, same noise."""

    @model_validator(mode="after")
    def _check_references(self) -> CatalogEntry:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError("column names must be unique")
        known = set(names)
        referenced = [self.privacy_unit.column, *self.lookup_keys]
        referenced += [t.column for t in self.privacy_unit.keep_first_by]
        for name in referenced:
            if name not in known:
                raise ValueError(f"column {name} is referenced but not declared")
        return self

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)


def is_servable(level: Level) -> bool:
    """Core data is never served (GB/T 43697-2024); it may not even be registered here."""
    return level is not Level.CORE


class ChangeKind(StrEnum):
    REGISTRATION = "registration"
    CHANGE = "change"
    CORRECTION = "correction"
    CANCELLATION = "cancellation"


class HistoryEvent(_Frozen):
    kind: ChangeKind
    at: datetime
    version: str | None
    note: str = ""


class DatasetRecord(_Frozen):
    """What the catalogue store holds for one dataset: its entry, state and history."""

    entry: CatalogEntry
    version: str
    status: Literal["registered", "cancelled"]
    rows: int
    rows_dropped_by_contribution_bound: int
    history: tuple[HistoryEvent, ...]

    @property
    def is_served(self) -> bool:
        return self.status == "registered" and is_servable(self.entry.level)


def row_count_floor(rows: int) -> int:
    """The lower end of the public order of magnitude of a row count (0 below 1,000)."""
    if rows < 1000:
        return 0
    magnitude = 1000
    while rows >= magnitude * 10:
        magnitude *= 10
    return magnitude


def coarse_row_count(rows: int) -> str:
    """A row count rounded to its order of magnitude: public, reveals little."""
    magnitude = row_count_floor(rows)
    if magnitude == 0:
        return "fewer than 1,000"
    return f"{magnitude:,} to {magnitude * 10:,}"
