"""The demo data generator: deterministic, valid identifiers, joins, canary, bounds."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow.parquet as pq

from gateway import demo_data
from gateway.catalog import load_entry
from gateway.domain.identifiers import is_valid_resident_id, is_valid_uscc


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_gives_same_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    a = demo_data.generate(tmp_path / "a", scale=0.01, seed=7)
    b = demo_data.generate(tmp_path / "b", scale=0.01, seed=7)
    c = demo_data.generate(tmp_path / "c", scale=0.01, seed=8)
    for name in demo_data.DATASETS:
        assert _digest(a.files[name]) == _digest(b.files[name])
        assert _digest(a.files[name]) != _digest(c.files[name])


def test_identifiers_are_valid_and_employers_join_the_registry(tmp_path: Path) -> None:
    summary = demo_data.generate(tmp_path, scale=0.02)
    registry = pq.read_table(summary.files["enterprise_registry"]).to_pydict()
    social = pq.read_table(summary.files["social_insurance"]).to_pydict()
    tax = pq.read_table(summary.files["tax_compliance"]).to_pydict()
    codes = set(registry["credit_code"])
    assert len(codes) == len(registry["credit_code"])
    assert all(is_valid_uscc(c) for c in codes)
    assert all(is_valid_resident_id(p) for p in set(social["person_id"]))
    assert set(social["employer_code"]) <= codes
    assert set(tax["credit_code"]) <= codes
    persons = len(set(social["person_id"]))
    assert len(social["person_id"]) > 5 * persons  # several rows per person


def test_values_agree_with_the_shipped_catalogue_entries(tmp_path: Path) -> None:
    summary = demo_data.generate(tmp_path, scale=0.02)
    for name in demo_data.DATASETS:
        entry = load_entry(tmp_path / f"{name}.yaml")
        table = pq.read_table(summary.files[name]).to_pydict()
        assert list(table) == [c.name for c in entry.columns]
        for column in entry.columns:
            values = table[column.name]
            if column.bounds is not None:
                low, high = column.bounds
                assert all(low <= v <= high for v in values), column.name
            if column.categories is not None:
                assert set(values) <= set(column.categories), column.name


def test_canary_is_planted_in_raw_values(tmp_path: Path) -> None:
    summary = demo_data.generate(tmp_path, scale=0.01, canary="CANARY-X1")
    registry = pq.read_table(summary.files["enterprise_registry"]).to_pydict()
    assert "CANARY-X1" in registry["legal_representative"]
    assert any("CANARY-X1" in name for name in registry["name"])
