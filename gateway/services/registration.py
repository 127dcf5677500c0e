"""Register, change, correct or cancel a dataset in the data domain.

Steps: (1) validate the catalogue entry; (2) refuse core data; (3) build the new version file
(checks, contribution bound, indexes) in bounded memory, which nothing serves yet; (4) record the registration in
the catalogue, the atomic switch: requests that started before it finish on the old version.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gateway import engine
from gateway.catalog import CatalogStore, load_entry
from gateway.domain.catalog import ChangeKind, DatasetRecord, HistoryEvent, is_servable
from gateway.errors import Conflict, RegistrationError
from gateway.settings import Settings


@dataclass(frozen=True, slots=True)
class RegistrationOutcome:
    record: DatasetRecord
    rows: int
    rows_dropped_by_contribution_bound: int
    unchanged: bool


def build_limits(settings: Settings) -> engine.BuildLimits:
    """What building a version may use, from the settings (docs/operations.md, sizing)."""
    return engine.BuildLimits(
        memory_limit=settings.registration_memory_limit,
        temp_directory=settings.registration_temp_directory,
        spark_master=settings.spark_master,
        spark_warehouse=settings.spark_warehouse,
    )


def register(
    catalog: CatalogStore,
    data_dir: Path,
    entry_file: Path,
    source: Path | str,
    *,
    correction: bool = False,
    note: str = "",
    progress: engine.ProgressFn = lambda _step: None,
    now: datetime | None = None,
    limits: engine.BuildLimits = engine.BuildLimits(),  # noqa: B008 - frozen, never mutated
) -> RegistrationOutcome:
    # 1. The catalogue entry is complete and consistent.
    entry = load_entry(entry_file)
    # 2. Core data is never served, so it is not registered either (GB/T 43697-2024).
    if not is_servable(entry.level):
        raise RegistrationError(f"dataset {entry.dataset} is classified core; core data is never served")
    previous = catalog.find(entry.dataset)
    if previous is None and correction:
        raise RegistrationError(f"dataset {entry.dataset} is not registered; nothing to correct")
    # 3. Build and check the new version; nothing is visible until step 4.
    built = engine.build_version(entry, source, data_dir, progress=progress, limits=limits)
    if previous is not None and previous.status == "registered" and previous.version == built.version:
        return RegistrationOutcome(previous, previous.rows, previous.rows_dropped_by_contribution_bound, True)
    kind = ChangeKind.CORRECTION if correction else ChangeKind.CHANGE
    if previous is None:
        kind = ChangeKind.REGISTRATION
    event = HistoryEvent(kind=kind, at=now or datetime.now(UTC), version=built.version, note=note)
    history = (*previous.history, event) if previous is not None else (event,)
    record = DatasetRecord(
        entry=entry,
        version=built.version,
        status="registered",
        rows=built.rows,
        rows_dropped_by_contribution_bound=built.rows_dropped_by_contribution_bound,
        history=history,
    )
    # 4. The switch: one atomic rename of the catalogue record.
    progress("switching the catalogue to the new version")
    catalog.save(record)
    return RegistrationOutcome(record, built.rows, built.rows_dropped_by_contribution_bound, False)


def cancel(catalog: CatalogStore, dataset: str, *, note: str = "", now: datetime | None = None) -> DatasetRecord:
    """Cancel a registration: the dataset stays in the directory as cancelled and is not served."""
    record = catalog.get(dataset)
    if record.status == "cancelled":
        raise Conflict(f"dataset {dataset} is already cancelled")
    event = HistoryEvent(kind=ChangeKind.CANCELLATION, at=now or datetime.now(UTC), version=None, note=note)
    cancelled = record.model_copy(update={"status": "cancelled", "history": (*record.history, event)})
    catalog.save(cancelled)
    return cancelled
