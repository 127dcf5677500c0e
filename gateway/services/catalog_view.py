"""The public data resource directory: metadata only, never a raw value or an exact count."""

from __future__ import annotations

from typing import Any

from gateway.catalog import CatalogStore
from gateway.domain.catalog import DatasetRecord, coarse_row_count
from gateway.domain.mock_rows import MockValue, mock_rows
from gateway.errors import InvalidRequest

MAX_SAMPLE_ROWS = 200


def summary(record: DatasetRecord) -> dict[str, Any]:
    entry = record.entry
    return {
        "dataset": entry.dataset,
        "registration_code": entry.registration_code,
        "title": entry.title,
        "owner_body": entry.owner_body,
        "classification": entry.classification.model_dump(),
        "level": entry.level.value,
        "status": record.status,
        "version": record.version,
    }


def detail(record: DatasetRecord) -> dict[str, Any]:
    entry = record.entry
    return {
        **summary(record),
        "description": entry.description,
        "source_system": entry.source_system,
        # SECURITY: an exact count is a raw statistic; only its order of magnitude is public.
        "approximate_rows": coarse_row_count(record.rows),
        "privacy_unit": {"column": entry.privacy_unit.column, "max_rows": entry.privacy_unit.max_rows},
        "lookup_keys": list(entry.lookup_keys),
        "columns": [c.model_dump(mode="json") for c in entry.columns],
        "history": [h.model_dump(mode="json") for h in record.history],
    }


def list_public(catalog: CatalogStore) -> list[dict[str, Any]]:
    return [summary(r) for r in catalog.records()]


def sample(catalog: CatalogStore, dataset: str, rows: int, seed: int) -> list[dict[str, MockValue]]:
    # 1. Admissible size, before anything else.
    if not 1 <= rows <= MAX_SAMPLE_ROWS:
        raise InvalidRequest(f"rows must be between 1 and {MAX_SAMPLE_ROWS}")
    # 2. Only the public entry goes in; the data domain is not opened at all.
    return mock_rows(catalog.get(dataset).entry, rows, seed)
