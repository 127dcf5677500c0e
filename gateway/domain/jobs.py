"""Approved analysis code (jobs): the job services of the bundle, and output checking.

Pure: no I/O. A job's outputs are released only if they pass a check. A table goes through
statistical disclosure control: it may hold only key columns whose values are public categories
of the job's datasets and count columns of non-negative integers; counts at or below the
threshold are redacted, the others rounded to a multiple of the rounding base, and secondary
suppression redacts more cells until no group of cells that shares all but one key (whose total
could be published) has exactly one redacted cell. Anything else is withheld, with a reason a
researcher can act on.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.domain.aggregate import EpsilonRange
from gateway.domain.catalog import CatalogEntry, ColumnType, Identifier
from gateway.errors import InvalidRequest

OutputName = str


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class JobLimits(_Frozen):
    cpu_seconds: int = Field(60, ge=1, le=3600)
    wall_seconds: int = Field(120, ge=5, le=7200)
    memory_mb: int = Field(2048, ge=256, le=65536)
    file_mb: int = Field(64, ge=1, le=10240)
    processes: int = Field(32, ge=4, le=1024)
    scratch_mb: int = Field(256, ge=1, le=65536)
    """The job's one writable place, a memory filesystem of this size: a job cannot fill the
    gateway's disk, and uses at most `memory_mb` plus this much memory."""


class DisclosureControl(_Frozen):
    threshold: int = Field(7, ge=0)
    """Counts at or below this are redacted."""
    rounding: int = Field(5, ge=1)
    """Other counts are rounded to the nearest multiple of this."""


class JobService(_Frozen):
    title: str = Field(min_length=1)
    description: str = ""
    datasets: tuple[Identifier, ...] = Field(min_length=1)
    output_check: Literal["sdc", "dp"] = "sdc"
    """Tables through disclosure control, or statistics through differential privacy only."""
    reviewers: int = Field(2, ge=1, le=2)
    """Administrators who must approve the code; nobody reviews their own job."""
    epsilon: EpsilonRange | None = None
    limits: JobLimits = Field(default_factory=JobLimits)
    sdc: DisclosureControl = Field(default_factory=DisclosureControl)

    @model_validator(mode="after")
    def _dp_needs_epsilon(self) -> JobService:
        if self.output_check == "dp" and self.epsilon is None:
            raise ValueError("a job service with output_check dp needs `epsilon`")
        return self


MAX_ARCHIVE_FILES = 100
MAX_ARCHIVE_BYTES = 4 * 1024 * 1024


def unpack_archive(data: bytes) -> dict[str, bytes]:
    """The files of a job archive (zip), checked: relative paths without `..`, at most 100 files
    and 4 MiB unpacked, and a `main.py` at the top, which is what runs."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = [i for i in archive.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, ValueError):
        raise InvalidRequest("archive: not a zip file") from None
    if len(infos) > MAX_ARCHIVE_FILES:
        raise InvalidRequest(f"archive: at most {MAX_ARCHIVE_FILES} files")
    if sum(i.file_size for i in infos) > MAX_ARCHIVE_BYTES:
        raise InvalidRequest("archive: at most 4 MiB unpacked")
    files: dict[str, bytes] = {}
    for info in infos:
        parts = PurePosixPath(info.filename).parts
        if info.filename.startswith("/") or "\\" in info.filename or not parts or ".." in parts:
            raise InvalidRequest(f"archive: {info.filename[:60]!r} is not a plain relative path")
        content = archive.read(info)
        if len(content) != info.file_size:
            raise InvalidRequest("archive: a file's size does not match its entry")
        files[PurePosixPath(*parts).as_posix()] = content
    if "main.py" not in files:
        raise InvalidRequest("archive: needs a main.py at its top, which is what runs")
    return files


@dataclass(frozen=True, slots=True)
class Checked:
    released: list[dict[str, Any]] | None
    reason: str | None = None


def public_values(entries: Sequence[CatalogEntry]) -> dict[str, set[Any]]:
    """Column name to its public categories, over the job's datasets (booleans count)."""
    out: dict[str, set[Any]] = {}
    for entry in entries:
        for column in entry.columns:
            if column.sensitivity.value != "public":
                continue
            if column.categories is not None:
                out.setdefault(column.name, set()).update(column.categories)
            elif column.type is ColumnType.BOOLEAN:
                out.setdefault(column.name, set()).update({True, False})
    return out


def check_table(output: Mapping[str, Any], public: Mapping[str, set[Any]], rules: DisclosureControl) -> Checked:
    """Disclosure control of one table output: the released rows, or why it is withheld."""
    keys, counts, rows = output.get("keys"), output.get("counts"), output.get("rows")
    if not isinstance(keys, list) or not isinstance(counts, list) or not isinstance(rows, list):
        return Checked(None, "a table needs `keys`, `counts` and `rows` lists")
    if not counts:
        return Checked(None, "a table needs at least one count column")
    for key in keys:
        if key not in public:
            return Checked(None, f"key column {str(key)[:40]!r} is not a public category column of the job's datasets")
    columns = set(keys) | set(counts)
    seen: set[tuple[Any, ...]] = set()
    for index, row in enumerate(rows):
        if not isinstance(row, dict) or set(row) != columns:
            extra = sorted(set(row) - columns) if isinstance(row, dict) else []
            detail = f": column {str(extra[0])[:40]!r} is neither a key nor a count" if extra else ""
            return Checked(None, f"row {index}: only the declared keys and counts may be released{detail}")
        key = tuple(row[k] for k in keys)
        if any(value not in public[k] for k, value in zip(keys, key, strict=True)):
            return Checked(None, f"row {index}: a key value is not a public category")
        if key in seen:
            return Checked(None, f"row {index}: the same keys appear twice")
        seen.add(key)
        for count in counts:
            value = row[count]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                return Checked(None, f"row {index}: {str(count)[:40]} must be a count (a whole number, 0 or more)")
    released = [dict(row) for row in rows]
    for count in counts:
        redacted = {i for i, row in enumerate(released) if row[count] <= rules.threshold}
        redacted = _secondary(released, keys, count, redacted)
        for i, row in enumerate(released):
            row[count] = None if i in redacted else _round(row[count], rules.rounding)
    return Checked(released)


def _round(value: int, base: int) -> int:
    return ((value + base // 2) // base) * base


def _secondary(rows: list[dict[str, Any]], keys: Sequence[str], count: str, redacted: set[int]) -> set[int]:
    """Redact more cells until no group (all keys equal but one) has exactly one redacted cell."""
    redacted = set(redacted)
    groupings = [[k for k in keys if k != free] for free in keys] or [[]]
    changed = True
    while changed:
        changed = False
        for fixed in groupings:
            groups: dict[tuple[Any, ...], list[int]] = {}
            for i, row in enumerate(rows):
                groups.setdefault(tuple(row[k] for k in fixed), []).append(i)
            for members in groups.values():
                hidden = [i for i in members if i in redacted]
                shown = [i for i in members if i not in redacted]
                if len(hidden) == 1 and shown:
                    redacted.add(min(shown, key=lambda i: (rows[i][count], i)))
                    changed = True
    return redacted
