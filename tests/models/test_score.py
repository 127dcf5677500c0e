"""Scoring in the domain: scores match a reference computation, only the score and grade leave,
and unknown keys, frozen models and keys past their limits are refused."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import pyarrow.parquet as pq
import yaml

from gateway.services.receipts import verify_receipt
from tests.conftest import CANARY, REPO
from tests.models.conftest import Client
from tests.verify.conftest import valid_unknown_code

MODEL = "enterprise-credit-risk"


def _both(bundle: dict[str, Any]) -> None:
    bundle["models"][MODEL]["output"] = "both"


def _reference(inst: Any, limit: int = 40) -> dict[str, tuple[int, str]]:
    """The scorecard of policies/models.yaml computed straight from the provider's files."""
    card = yaml.safe_load((REPO / "policies" / "models.yaml").read_text())["models"][MODEL]
    registry = pq.read_table(inst.source / "enterprise_registry.parquet").to_pylist()[:limit]
    tax: dict[str, list[dict[str, Any]]] = {}
    for row in pq.read_table(inst.source / "tax_compliance.parquet").to_pylist():
        tax.setdefault(row["credit_code"], []).append(row)
    today = datetime.now(UTC).date()

    def points(feature: str, value: Any) -> int:
        if value is None:
            return int(card["missing_points"].get(feature, 0))
        for rule in card["points"][feature]:
            if "below" in rule and not isinstance(value, (bool, str)) and value < rule["below"]:
                return int(rule["points"])
            if "equals" in rule and value == rule["equals"] and type(value) is type(rule["equals"]):
                return int(rule["points"])
            if "below" not in rule and "equals" not in rule:
                return int(rule["points"])
        return 0

    out = {}
    for enterprise in registry:
        years = sorted(tax.get(enterprise["credit_code"], []), key=lambda r: r["tax_year"], reverse=True)
        established: date = enterprise["established"]
        features = {
            "status": enterprise["status"],
            "years_established": today.year
            - established.year
            - ((today.month, today.day) < (established.month, established.day)),
            "registered_capital": enterprise["registered_capital"],
            "arrears_recent": sum(r["arrears_months"] for r in years[:2]) if years else None,
            "tax_paid_latest": years[0]["tax_paid"] if years else None,
            "filed_on_time_latest": years[0]["filed_on_time"] if years else None,
        }
        total = card["base_points"] + sum(points(f, v) for f, v in features.items())
        grade = next(g["grade"] for g in card["grades"] if "min_score" not in g or total >= g["min_score"])
        out[enterprise["credit_code"]] = (total, grade)
    return out


def test_scores_match_the_reference_computation(models_gateway: Callable[..., Client]) -> None:
    bank = models_gateway(_both, who="demo-business")
    expected = _reference(bank.installation)
    keys = list(expected)
    answers = []
    for start in range(0, len(keys), 20):
        response = bank.score(keys[start : start + 20])
        assert response.status_code == 200, response.text
        answers += response.json()["result"]["answers"]
    got = {keys[i // 1]: (a["score"], a["grade"]) for i, a in enumerate(answers)}
    assert got == expected
    assert len({grade for _score, grade in expected.values()}) >= 2  # the test data exercise several bands


def test_only_the_grade_leaves_and_receipts_verify(models_gateway: Callable[..., Client]) -> None:
    bank = models_gateway(who="demo-business")
    keys = list(_reference(bank.installation, 6))  # the first enterprise carries the canary
    unknown = valid_unknown_code(bank.installation)
    response = bank.score([*keys, unknown, "not-a-code"])
    assert response.status_code == 200, response.text
    body = response.json()
    answers = body["result"]["answers"]
    assert all(set(a) == {"entity", "result", "grade", "transaction_id"} for a in answers[: len(keys)])
    assert answers[len(keys)] == {
        "entity": len(keys),
        "result": "not_found",
        "transaction_id": answers[len(keys)]["transaction_id"],
    }
    assert answers[-1]["result"] == "invalid" and answers[-1]["error"]["field"] == "key"
    assert CANARY not in response.text
    registry = pq.read_table(bank.installation.source / "enterprise_registry.parquet").to_pylist()[:6]
    for enterprise in registry:  # no feature value reaches the response
        assert str(enterprise["registered_capital"]) not in response.text
        assert enterprise["established"].isoformat() not in response.text
    jwks = bank.client.get("/.well-known/jwks.json").json()
    assert verify_receipt(body["receipt"], jwks).result == body["result"]
    assert "RateLimit" in response.headers


def test_frozen_models_and_keys_past_their_limits_are_refused(models_gateway: Callable[..., Client]) -> None:
    def tight(bundle: dict[str, Any]) -> None:
        bundle["models"][MODEL]["limits"]["distinct_keys_per_day"] = 3

    bank = models_gateway(tight, who="demo-business")
    keys = list(_reference(bank.installation, 5))
    assert bank.score(keys[:3]).status_code == 200
    again = bank.score(keys[:3])  # the same entities again: stored answers, nothing counted
    assert again.status_code == 200
    refused = bank.score([keys[3]])
    assert refused.status_code == 429 and refused.json()["type"].endswith("/rate-limited")
    assert "Retry-After" in refused.headers
    admin = models_gateway(tight, who="demo-admin")
    stop = {"kind": "service", "name": MODEL, "reason": "model under review"}
    assert admin.client.post("/v1/admin/freeze", json=stop, headers=admin.headers).status_code == 201
    frozen = bank.score(keys[:1])
    assert frozen.status_code == 403 and "model under review" in frozen.json()["detail"]
    assert bank.score(keys[:1], purpose="public_research").status_code == 403
    researcher = models_gateway(who="demo-researcher")
    assert researcher.score(keys[:1]).status_code == 403
    assert bank.score(keys[:1], model="synthetic-regression").status_code == 404


def test_the_registry_shows_cards_but_no_weights(models_gateway: Callable[..., Client]) -> None:
    client = models_gateway().client
    listed = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    card = listed[MODEL]
    assert card["kind"] == "scorecard" and card["version"].startswith("sha256:")
    assert card["card"]["owner"] and card["grades"] == ["A", "B", "C", "D"]
    assert "points" not in card and "base_points" not in card
    assert listed["synthetic-regression"]["kind"] == "linear_regression"


def test_a_new_model_version_is_an_approved_and_audited_change(models_gateway: Callable[..., Client]) -> None:
    admin = models_gateway(who="demo-admin")
    approver = models_gateway(who="demo-approver")
    bank = models_gateway(who="demo-business")
    before = {m["name"]: m["version"] for m in bank.client.get("/v1/models").json()["models"]}[MODEL]
    policy = admin.client.get("/v1/admin/policy", headers=admin.headers).json()
    bundle = policy["bundle"]
    bundle["models"][MODEL]["base_points"] = 650
    proposed = admin.client.put(
        "/v1/admin/policy",
        json={"bundle": bundle, "note": "recalibrated base", "base_version": policy["version"]},
        headers=admin.headers,
    )
    assert proposed.status_code == 202, proposed.text
    assert {m["name"]: m["version"] for m in bank.client.get("/v1/models").json()["models"]}[MODEL] == before
    proposal = proposed.json()["proposal"]["id"]
    approved = approver.client.post(f"/v1/admin/policy/proposals/{proposal}/approve", headers=approver.headers)
    assert approved.status_code == 200, approved.text
    # The bank's app is another server process in effect: it sees the approval once its recheck
    # interval has passed (state_recheck_seconds), not on a request made in the same instant.
    time.sleep(bank.installation.settings.state_recheck_seconds)
    after = {m["name"]: m["version"] for m in bank.client.get("/v1/models").json()["models"]}[MODEL]
    assert after != before
    scored = bank.score(list(_reference(bank.installation, 2)))
    assert scored.json()["result"]["model_version"] == after
    trail = admin.client.get("/v1/admin/audit?limit=1000", headers=admin.headers).json()
    routes = [(leaf["principal"], leaf["route"]) for leaf in trail["leaves"]]
    assert ("demo-admin", "/v1/admin/policy") in routes
    assert ("demo-approver", "/v1/admin/policy/proposals/{proposal_id}/approve") in routes


def test_a_row_without_its_order_and_a_failed_lookup_still_leave_a_trail(
    models_gateway: Callable[..., Client], monkeypatch: Any
) -> None:
    """A NULL `order_by` sorts after every value (it raised TypeError: a 500 that only some
    entities' rows gave, a free yes/no about them); and a lookup that fails on an entity's rows
    still names that entity in the audit leaf of the refused request."""
    from gateway.domain.models import Feature, feature_value
    from gateway.state.audit_sqlite import SqliteAuditLog
    from gateway.state.ports import LeafFilter

    feature = Feature(dataset="tax_compliance", column="arrears", key="credit_code", order_by="tax_year", last=2)
    rows = [(5, 2024), (7, None), (9, 2025)]
    assert feature_value(feature.model_copy(update={"transform": "sum"}), rows, date(2026, 1, 1)) == 14
    assert feature_value(feature, [(7, None), (3, None)], date(2026, 1, 1)) == 7

    bank = models_gateway(who="demo-business")
    key = next(iter(_reference(bank.installation, 1)))
    domain = bank.client.app.state.runtime.domain
    real_find = domain.find

    def failing(dataset: str, *args: Any) -> Any:
        if dataset == "tax_compliance":
            raise ValueError("a value this lookup cannot handle")
        return real_find(dataset, *args)

    monkeypatch.setattr(domain, "find", failing)
    assert bank.score([key]).status_code == 500
    log = SqliteAuditLog.open(bank.installation.settings.audit_dir)
    try:
        (leaf,) = [x for x in log.find(LeafFilter(service=MODEL), limit=100) if x.status == 500]
    finally:
        log.close()
    assert leaf.subjects and leaf.subjects[0].startswith("enterprise:")
