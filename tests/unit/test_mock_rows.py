"""Synthetic samples: made from the catalogue alone, and joinable where the data is."""

from __future__ import annotations

from pathlib import Path

from gateway.catalog import load_entry
from gateway.domain.catalog import CatalogEntry
from gateway.domain.mock_rows import mock_rows

DEMO_CATALOG = Path(__file__).parents[2] / "gateway" / "demo_catalog"


def _entry(name: str) -> CatalogEntry:
    return load_entry(DEMO_CATALOG / f"{name}.yaml")


def test_samples_of_datasets_that_share_a_key_column_share_their_keys() -> None:
    registry = mock_rows(_entry("enterprise_registry"), 200, seed=1)
    tax = mock_rows(_entry("tax_compliance"), 200, seed=1)
    insurance = mock_rows(_entry("social_insurance"), 200, seed=1)
    enterprises = {r["credit_code"] for r in registry} - {None}
    assert len(enterprises) > 150  # keys stay distinct within a dataset
    assert len(enterprises & {r["credit_code"] for r in tax}) > 150
    assert len(enterprises & {r["employer_code"] for r in insurance}) > 150
    assert mock_rows(_entry("social_insurance"), 200, seed=1) == insurance  # reproducible
    assert not {r["person_id"] for r in insurance} & enterprises  # formats do not mix
