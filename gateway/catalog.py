"""The catalogue store: one JSON record per dataset under `<data_dir>/catalog/`.

Owns reading catalogue entries (YAML) and the registration records. Imports no other leaf.
Invariant: a record file is replaced atomically (write, fsync, rename), so a reader sees the
old record or the new one, never a mix; the record names the data version that is served.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import yaml
from pydantic import ValidationError

from gateway.atomic_files import Recheck, Stamp, stamp, write_atomic
from gateway.domain.catalog import CatalogEntry, DatasetRecord
from gateway.domain.names import is_identifier
from gateway.errors import NotFound, RegistrationError


def load_entry(path: Path) -> CatalogEntry:
    """Parse and validate a catalogue entry; errors name the field, never echo file content."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RegistrationError(f"cannot read catalogue entry {path.name}: {type(exc).__name__}") from exc
    try:
        return CatalogEntry.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(entry)'}: {err['msg']}" for err in exc.errors()
        )
        raise RegistrationError(f"catalogue entry {path.name} is invalid: {problems}") from exc


class CatalogStore:
    """Reads and writes dataset records; re-reads a record only when its file changed."""

    def __init__(self, data_dir: Path, *, recheck_seconds: float = 0.0) -> None:
        """`recheck_seconds`: how long `find` may answer a record from memory before it looks
        at its file again (0: on every call). A record saved here is seen at once."""
        self._dir = data_dir / "catalog"
        self._prefix = f"{self._dir}{os.sep}"
        self._cache: dict[str, tuple[Stamp, DatasetRecord]] = {}
        self._rechecks: dict[str, Recheck] = {}
        self._recheck_seconds = recheck_seconds
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        if not self._dir.is_dir():
            return []
        return sorted(p.stem for p in self._dir.glob("*.json"))

    def find(self, dataset: str) -> DatasetRecord | None:
        if not is_identifier(dataset):  # SECURITY: the name becomes a file name; nothing else is one
            return None
        cached = self._cache.get(dataset)
        recheck = self._rechecks.get(dataset)
        if cached is not None and recheck is not None and not recheck.due():
            return cached[1]
        path = f"{self._prefix}{dataset}.json"
        current = stamp(path)
        if current is None:
            return None
        if cached is not None and cached[0] == current:
            return cached[1]
        record = DatasetRecord.model_validate_json(Path(path).read_bytes())
        with self._lock:
            self._cache[dataset] = (current, record)
            self._rechecks.setdefault(dataset, Recheck(self._recheck_seconds))
        return record

    def get(self, dataset: str) -> DatasetRecord:
        record = self.find(dataset)
        if record is None:
            raise NotFound("dataset: no registered dataset of this name")
        return record

    def records(self) -> list[DatasetRecord]:
        return [r for r in (self.find(n) for n in self.names()) if r is not None]

    def save(self, record: DatasetRecord) -> None:
        data = json.dumps(record.model_dump(mode="json"), ensure_ascii=False, indent=2).encode()
        write_atomic(self._dir / f"{record.entry.dataset}.json", data)
        recheck = self._rechecks.get(record.entry.dataset)
        if recheck is not None:
            recheck.now()
