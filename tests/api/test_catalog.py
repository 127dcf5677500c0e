"""The public directory: metadata only; samples come from metadata alone."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from fastapi.testclient import TestClient

from gateway.catalog import CatalogStore, load_entry
from gateway.domain.identifiers import is_valid_resident_id, is_valid_uscc
from gateway.services import registration
from tests.conftest import Installation, bearer, eventually, get_token


def test_list_and_detail(shared_client: TestClient) -> None:
    listed = shared_client.get("/v1/catalog").json()["datasets"]
    assert [d["dataset"] for d in listed] == ["enterprise_registry", "social_insurance", "tax_compliance"]
    detail = shared_client.get("/v1/catalog/social_insurance").json()
    assert detail["level"] == "important"
    assert detail["privacy_unit"] == {"column": "person_id", "max_rows": 36}
    assert detail["history"][0]["kind"] == "registration"
    wage = next(c for c in detail["columns"] if c["name"] == "wage_base")
    assert wage["bounds"] == [0, 40000] and wage["sensitivity"] == "personal"


def test_no_exact_row_count_is_public(shared_client: TestClient, session_installation: Installation) -> None:
    record = CatalogStore(session_installation.settings.data_path).get("social_insurance")
    text = shared_client.get("/v1/catalog/social_insurance").text
    assert str(record.rows) not in text
    assert str(record.rows_dropped_by_contribution_bound) not in text
    assert shared_client.get("/v1/catalog/social_insurance").json()["approximate_rows"] == "1,000 to 10,000"


def _check_sample_row(row: dict[str, Any], entry_path: Path) -> None:
    entry = load_entry(entry_path)
    for column in entry.columns:
        value = row[column.name]
        if value is None:
            assert column.nullable
            continue
        if column.key_format == "uscc":
            assert is_valid_uscc(value)
        if column.key_format == "resident_id":
            assert is_valid_resident_id(value)
        if column.bounds is not None:
            assert column.bounds[0] <= value <= column.bounds[1]
        if column.categories is not None:
            assert value in column.categories
        if column.type.value == "date":
            date.fromisoformat(value)


def test_sample_is_synthetic_valid_and_reproducible(
    shared_client: TestClient, session_installation: Installation
) -> None:
    for dataset in ("enterprise_registry", "social_insurance", "tax_compliance"):
        body = shared_client.get(f"/v1/catalog/{dataset}/sample?rows=50&seed=3").json()
        assert body["synthetic"] is True and len(body["rows"]) == 50
        for row in body["rows"]:
            _check_sample_row(row, session_installation.source / f"{dataset}.yaml")
        again = shared_client.get(f"/v1/catalog/{dataset}/sample?rows=50&seed=3").json()
        assert again == body
        other = shared_client.get(f"/v1/catalog/{dataset}/sample?rows=50&seed=4").json()
        assert other != body


def test_sample_never_contains_a_real_value(shared_client: TestClient, session_installation: Installation) -> None:
    real = pq.read_table(session_installation.source / "enterprise_registry.parquet").to_pydict()
    real_codes, real_names = set(real["credit_code"]), set(real["name"]) | set(real["legal_representative"])
    rows = shared_client.get("/v1/catalog/enterprise_registry/sample?rows=200").json()["rows"]
    assert not {r["credit_code"] for r in rows} & real_codes
    assert not ({r["name"] for r in rows} | {r["legal_representative"] for r in rows}) & real_names


def test_sample_does_not_depend_on_the_data(installation: Installation, make_client: Any, tmp_path: Path) -> None:
    """Same entry, different data: the sample is byte-identical, so no data reaches it."""
    client = make_client(installation.settings)
    before = client.get("/v1/catalog/tax_compliance/sample?rows=100").content
    table = pq.read_table(installation.source / "tax_compliance.parquet")
    other = tmp_path / "other.parquet"
    pq.write_table(table.slice(0, 10), other)
    data_dir = installation.settings.data_path
    registration.register(CatalogStore(data_dir), data_dir, installation.source / "tax_compliance.yaml", other)
    # another process's registration: the server sees it within state_recheck_seconds
    eventually(lambda: client.get("/v1/catalog/tax_compliance").json()["history"][-1]["kind"] == "change")
    assert client.get("/v1/catalog/tax_compliance/sample?rows=100").content == before


def test_cancelled_dataset_is_listed_as_cancelled(installation: Installation, make_client: Any) -> None:
    registration.cancel(CatalogStore(installation.settings.data_path), "tax_compliance", note="retired")
    client = make_client(installation.settings)
    detail = client.get("/v1/catalog/tax_compliance").json()
    assert detail["status"] == "cancelled"
    assert detail["history"][-1] == {**detail["history"][-1], "kind": "cancellation", "version": None}
    assert client.get("/readyz").json()["datasets_served"] == 2


def test_admin_view_has_exact_counts_for_admins_and_auditors_only(
    shared_client: TestClient, session_installation: Installation
) -> None:
    creds = session_installation.credentials
    for who in ("demo-admin", "demo-auditor"):
        body = shared_client.get("/v1/admin/datasets", headers=bearer(get_token(shared_client, who, creds[who]))).json()
        social = next(d for d in body["datasets"] if d["dataset"] == "social_insurance")
        assert social["rows"] > 0 and social["rows_dropped_by_contribution_bound"] > 0
    for who in ("demo-business", "demo-researcher"):
        token = get_token(shared_client, who, creds[who])
        assert shared_client.get("/v1/admin/datasets", headers=bearer(token)).status_code == 403
    assert shared_client.get("/v1/admin/datasets").status_code == 401


def test_health_and_readiness(shared_client: TestClient) -> None:
    assert shared_client.get("/healthz").json() == {"status": "ok"}
    ready = shared_client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["datasets_served"] == 3 and ready["token_keys"] == 1


def test_readiness_fails_when_a_version_file_is_gone(installation: Installation, make_client: Any) -> None:
    record = CatalogStore(installation.settings.data_path).get("enterprise_registry")
    path = installation.settings.data_path / "domain" / "enterprise_registry" / f"{record.version}.duckdb"
    path.unlink()
    response = make_client(installation.settings).get("/readyz")
    assert response.status_code == 503
    assert response.json()["type"].endswith("/not-ready")
