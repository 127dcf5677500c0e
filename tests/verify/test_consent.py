"""Verification about persons: consent references, resident-id validation, person pseudonyms."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

from gateway.catalog import CatalogStore
from gateway.services import registration
from tests.conftest import Installation
from tests.verify.conftest import Gateway


def _register_person_dataset(inst: Installation, tmp_path: Path) -> list[dict[str, Any]]:
    """The contribution records again, as a general-level dataset a person verification may use."""
    entry = yaml.safe_load((inst.source / "social_insurance.yaml").read_text())
    entry.update(dataset="insured_persons", level="general", registration_code="PDR-TEST-0001")
    (tmp_path / "insured_persons.yaml").write_text(yaml.safe_dump(entry, allow_unicode=True))
    registration.register(
        CatalogStore(inst.settings.data_path),
        inst.settings.data_path,
        tmp_path / "insured_persons.yaml",
        inst.source / "social_insurance.parquet",
    )
    rows: list[dict[str, Any]] = pq.read_table(inst.source / "social_insurance.parquet").to_pylist()
    return rows


def _person_service(bundle: dict[str, Any]) -> None:
    bundle["verification_services"]["insured"] = {
        "title": "Insured person",
        "dataset": "insured_persons",
        "keys": ["person_id"],
        "latest_by": "month",
        "consent_required": True,
        "fields": {"paid_last_month": {"column": "paid", "check": "fixed", "value": True}},
    }
    bundle["grants"]["bank-sme-credit-2026"]["services"].append("insured")


def test_person_claims_need_consent_and_valid_ids(
    installation: Installation, tmp_path: Path, gateway_for: Callable[..., Gateway]
) -> None:
    rows = _register_person_dataset(installation, tmp_path)
    gw = gateway_for(_person_service)
    person = rows[0]["person_id"]
    latest = max((r for r in rows if r["person_id"] == person), key=lambda r: r["month"])
    wrong_check_char = person[:-1] + ("0" if person[-1] != "0" else "1")
    claims = [
        {"keys": {"person_id": person}, "checks": {"paid_last_month": True}, "consent_ref": "AUTH-2026-0001"},
        {"keys": {"person_id": person}, "checks": {"paid_last_month": True}},
        {"keys": {"person_id": wrong_check_char}, "checks": {"paid_last_month": True}, "consent_ref": "A-2"},
        {"keys": {"person_id": person.lower()}, "checks": {"paid_last_month": True}, "consent_ref": "  "},
    ]
    response = gw.verify(claims, service="insured")
    assert response.status_code == 200, response.text
    answers = response.json()["result"]["answers"]
    assert answers[0]["fields"] == {"paid_last_month": latest["paid"]}
    assert answers[1]["error"]["field"] == "consent_ref"
    assert answers[2]["error"]["field"] == "keys.person_id"
    assert answers[3]["error"]["field"] == "consent_ref"
    assert person not in response.text
    leaf = gw.client.app.state.runtime.audit.leaf(response.json()["audit_seq"])  # type: ignore[attr-defined]
    assert leaf is not None and leaf.subjects and leaf.subjects[0].startswith("person:")
    assert person not in leaf.model_dump_json()
