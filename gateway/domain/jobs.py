"""Approved analysis code (jobs): the job services of the bundle, and output checking.

Pure: no I/O. A job's outputs are released only if they pass a check: tables through
statistical disclosure control and output checking (`gateway.domain.sdc`), statistics through
differential privacy.
"""

from __future__ import annotations

import importlib.machinery
import io
import unicodedata
import zipfile
from pathlib import PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.domain.aggregate import EpsilonRange
from gateway.domain.catalog import Identifier
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


_COMPILED_SUFFIXES = (*importlib.machinery.BYTECODE_SUFFIXES, *importlib.machinery.EXTENSION_SUFFIXES,
                      ".pyc", ".pyo", ".pyd", ".so", ".pth")  # fmt: skip


def _is_compiled(name: str) -> bool:
    """SECURITY: a member Python imports without a source a reviewer can read: bytecode (an
    unchecked-hash `.pyc` in `__pycache__` runs instead of the `.py` beside it), an extension
    module (`import x` loads `x.so`), a `.pth` file."""
    path = PurePosixPath(name)
    return "__pycache__" in path.parts or path.name.endswith(_COMPILED_SUFFIXES)


def unpack_archive(data: bytes) -> dict[str, bytes]:
    """The files of a job archive (zip), checked: relative paths without `..`, each once, at most
    100 files and 4 MiB unpacked, and a `main.py` at the top, which is what runs."""
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
        name = PurePosixPath(*parts).as_posix() if parts else ""
        # SECURITY: one name twice (`main.py`, `./main.py`) is read from the first by one tool and
        # run from the last by another: reviewers would approve other code than what runs.
        hidden = any(unicodedata.category(ch)[0] == "C" for ch in info.filename)  # reviewers read the names too
        if (
            info.filename.startswith("/")
            or "\\" in info.filename
            or not parts
            or ".." in parts
            or name in files
            or hidden
        ):
            raise InvalidRequest("archive: every member must be a plain relative path, once")
        if _is_compiled(name):
            raise InvalidRequest(
                "archive: no compiled code (bytecode, __pycache__, extension modules, .pth files): Python "
                "would load it in place of, or beside, the sources reviewers read"
            )
        content = archive.read(info)
        if len(content) != info.file_size:
            raise InvalidRequest("archive: a file's size does not match its entry")
        files[name] = content
    if "main.py" not in files:
        raise InvalidRequest("archive: needs a main.py at its top, which is what runs")
    return files
