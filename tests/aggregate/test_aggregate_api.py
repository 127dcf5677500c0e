"""POST /v1/aggregate/...: refusals before any data is read, exact charges, one answer per question,
idempotent retries, budgets at three levels, receipts and audit."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import pytest

from gateway.domain.trail import digest
from gateway.services.receipts import verify_receipt
from tests.aggregate.conftest import Research

COUNT = "contributors-count"
BY_REGION = {"group_by": ["region"]}


def _spent_everywhere(r: Research) -> list[str]:
    return [r.spent(level=level) for level in ("grant", "organisation", "dataset_version")]


def test_a_release_is_signed_charged_exactly_and_has_every_cell(research: Callable[..., Research]) -> None:
    r = research()
    response = r.release(
        COUNT, parameters={"group_by": ["region", "industry"], "filters": {"paid": [True]}}, epsilon="0.3"
    )
    assert response.status_code == 200, response.text
    body = response.json()
    result = body["result"]
    regions = r.client.get("/v1/catalog/social_insurance", headers=r.headers).json()
    categories = {c["name"]: c.get("categories") for c in regions["columns"]}
    expected = [
        {"region": a, "industry": b} for a, b in itertools.product(categories["region"], categories["industry"])
    ]
    assert [row["group"] for row in result["rows"]] == expected  # every cell, empty ones too, in a fixed order
    for row in result["rows"]:
        low, high = row["interval"]
        assert isinstance(row["value"], int) and low <= row["value"] <= high
    (noise,) = result["noise"]
    assert noise["mechanism"] == "discrete_laplace" and noise["sensitivity"] == 36 and noise["epsilon"] == "0.3"
    assert result["epsilon"] == "0.3" and result["delta"] == "0" and result["replayed"] is False
    assert body["privacy_spent"] == {"epsilon": "0.3", "delta": "0"}
    assert _spent_everywhere(r) == ["0.3", "0.3", "0.3"]
    assert verify_receipt(body["receipt"], r.client.get("/.well-known/jwks.json").json()).result == result
    leaf = r.client.get(f"/v1/audit/leaves/{body['audit_seq']}", headers=r.headers).json()
    assert leaf["cost"]["epsilon"] == "0.3" and leaf["service"] == COUNT and leaf["dataset"] == "social_insurance"
    assert leaf["result_digest"] == digest(result)


def test_the_same_question_gets_the_same_answer_free_even_after_a_restart(research: Callable[..., Research]) -> None:
    r = research()
    first = r.release(COUNT, parameters={"filters": {"industry": ["F", "C"]}, **BY_REGION}, epsilon="0.5").json()
    # the same query written differently: filter values in another order, repeated, epsilon as a number
    again = r.release(COUNT, parameters={"filters": {"industry": ["C", "F", "C"]}, **BY_REGION}, epsilon=0.5).json()
    assert again["result"]["rows"] == first["result"]["rows"]
    assert again["result"]["replayed"] is True and again["privacy_spent"] == {"epsilon": "0", "delta": "0"}
    restarted = research()
    third = restarted.release(
        COUNT, parameters={"filters": {"industry": ["C", "F"]}, **BY_REGION}, epsilon="0.5"
    ).json()
    assert third["result"]["rows"] == first["result"]["rows"]
    assert restarted.spent() == "0.5"
    # another epsilon is another question
    other = restarted.release(COUNT, parameters={"filters": {"industry": ["C", "F"]}, **BY_REGION}, epsilon="0.6")
    assert other.json()["result"]["replayed"] is False and restarted.spent() == "1.1"


def test_an_idempotency_key_replays_the_first_answer_byte_for_byte(research: Callable[..., Research]) -> None:
    r = research()
    key = {"Idempotency-Key": "retry-7f3a"}
    first = r.release("wage-base-mean", parameters=BY_REGION, epsilon="0.4", headers=key)
    second = r.release("wage-base-mean", parameters=BY_REGION, epsilon="0.4", headers=key)
    assert first.status_code == second.status_code == 200
    assert first.content == second.content and r.spent() == "0.4"
    clash = r.release("wage-base-mean", parameters=BY_REGION, epsilon="0.5", headers=key)
    assert clash.status_code == 422 and "Idempotency-Key" in clash.json()["detail"]
    # a refused request frees its key: fixing the request and retrying with the key works
    key2 = {"Idempotency-Key": "retry-8b"}
    assert r.release("wage-base-mean", parameters=BY_REGION, epsilon="9", headers=key2).status_code == 422
    assert r.release("wage-base-mean", parameters=BY_REGION, epsilon="0.7", headers=key2).status_code == 200


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ({"parameters": {"group_by": ["person_id"]}}, "parameters.group_by"),
        ({"parameters": {"group_by": ["region", "industry", "paid"]}}, "group_by"),
        ({"parameters": {"filters": {"person_id": ["x"]}}}, "parameters.filters: a column is not a filter"),
        ({"parameters": {"filters": {"industry": ["Z"]}}}, "parameters.filters.industry"),
        ({"parameters": {"filters": {"industry": []}}}, "parameters.filters.industry"),
        ({"parameters": {"filters": {"month": {"from": "2019-01-01"}}}}, "parameters.filters.month"),
        (
            {"parameters": {"filters": {"month": {"from": "2025-02-01", "to": "2025-01-01"}}}},
            "parameters.filters.month",
        ),
        ({"parameters": {"filters": {"month": {"from": "yesterday"}}}}, "parameters.filters.month.from"),
        ({"parameters": {"filters": {"month": ["2025-01-01"]}}}, "parameters.filters.month"),
        ({"parameters": {"filters": {"paid": ["yes"]}}}, "parameters.filters.paid"),
        ({"parameters": {"sample": 10}}, '"body.parameters", "message": "an unknown field'),
        ({"epsilon": "3"}, "epsilon"),
        ({"epsilon": "0"}, "epsilon"),
        ({"epsilon": "-1"}, "epsilon"),
        ({"epsilon": "NaN"}, "epsilon"),
        ({"epsilon": "Infinity"}, "epsilon"),
        ({"epsilon": "0.0000001"}, "epsilon"),
        ({"epsilon": "lots"}, "epsilon"),
        ({"max_interval_width": 5}, "max_interval_width"),
        ({"max_interval_width": -5}, "max_interval_width"),
        ({"unexpected": 1}, '"body", "message": "an unknown field'),
    ],
)
def test_what_the_template_does_not_allow_is_refused_without_charge(
    research: Callable[..., Research], body: dict[str, Any], names: str
) -> None:
    r = research()
    response = r.release(COUNT, **body)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["type"].endswith("/invalid-request")
    assert names in json.dumps(problem)
    assert r.spent() == "0"


def test_preview_states_cost_and_accuracy_and_spends_nothing(research: Callable[..., Research]) -> None:
    r = research()
    preview = r.preview(COUNT, parameters=BY_REGION, epsilon="0.5")
    assert preview.status_code == 200, preview.text
    (query,) = preview.json()["queries"]
    assert preview.json()["total"] == {"epsilon": "0.5", "delta": "0"}
    assert query["rows"] == 31 and query["noise"][0]["scale"] == 72.0
    width = query["interval_width"]
    released = r.release(COUNT, parameters=BY_REGION, epsilon="0.5").json()["result"]
    for row in released["rows"]:
        low, high = row["interval"]
        assert high - low <= width
    assert r.spent() == "0.5"
    # asking for a narrower interval than the epsilon gives is refused, and costs nothing
    narrow = r.release(COUNT, parameters=BY_REGION, epsilon="0.2", max_interval_width=width)
    assert narrow.status_code == 422 and "raise epsilon" in narrow.json()["detail"]
    assert r.spent() == "0.5"
    # a mean's width is predicted from the catalogue's public order of magnitude of rows, so a
    # promise can be asked for it too: a narrower one is refused, the predicted one accepted
    (mean,) = r.preview("wage-base-mean", parameters=BY_REGION).json()["queries"]
    assert 0 < mean["interval_width"] <= 40000  # the demo at test scale has few rows per region
    narrower = r.preview("wage-base-mean", parameters=BY_REGION, max_interval_width=mean["interval_width"] / 2)
    assert narrower.status_code == 422 and "raise epsilon" in narrower.json()["detail"]
    same = r.preview("wage-base-mean", parameters=BY_REGION, max_interval_width=mean["interval_width"])
    assert same.status_code == 200
    assert r.spent() == "0.5"


def test_budget_is_enforced_at_each_level(research: Callable[..., Research]) -> None:
    def tight(bundle: dict[str, Any]) -> None:
        bundle["grants"]["labour-research-2026"]["budget"] = {"epsilon": "1"}
        bundle["organisations"]["demo-university"]["budget"] = {"epsilon": "1.5"}
        bundle["dataset_budgets"]["social_insurance"] = {"epsilon": "1.2"}

    r = research(tight)
    assert r.release(COUNT, parameters=BY_REGION, epsilon="0.6").status_code == 200
    over = r.release(COUNT, parameters=BY_REGION, epsilon="0.5")
    assert over.status_code == 409 and "grant's budget" in over.json()["detail"]
    assert over.json()["type"].endswith("/budget-exhausted")
    assert r.release(COUNT, parameters=BY_REGION, epsilon="0.4").status_code == 200
    assert r.spent() == "1"
    budgets = r.client.get("/v1/budget", headers=r.headers).json()["budgets"]
    (view,) = [b["levels"] for b in budgets if b["dataset"] == "social_insurance"]
    assert view["grant"]["remaining"]["epsilon"] == "0"
    assert view["dataset_version"] == {
        "granted": {"epsilon": "1.2", "delta": "0"},
        "spent": {"epsilon": "1", "delta": "0"},
        "reserved": {"epsilon": "0", "delta": "0"},
        "remaining": {"epsilon": "0.2", "delta": "0"},
    }

    def dataset_cap(bundle: dict[str, Any]) -> None:
        tight(bundle)
        bundle["grants"]["labour-research-2026"]["budget"] = {"epsilon": "5"}

    r2 = research(dataset_cap)
    refused = r2.release(COUNT, parameters=BY_REGION, epsilon="0.3")
    assert refused.status_code == 409 and "global budget of this dataset version" in refused.json()["detail"]


def test_a_batch_is_previewed_with_its_total_and_charged_all_or_nothing(research: Callable[..., Research]) -> None:
    def tight(bundle: dict[str, Any]) -> None:
        bundle["grants"]["labour-research-2026"]["budget"] = {"epsilon": "1"}

    r = research(tight)
    queries = [
        {"template": COUNT, "parameters": BY_REGION, "epsilon": "0.25"},
        {"template": "wage-base-total", "parameters": BY_REGION, "epsilon": "0.5"},
        {"template": "insured-persons", "epsilon": "0.5"},
    ]
    body = {"purpose": "public_research", "queries": queries}
    preview = r.client.post("/v1/aggregate-batch/preview", json=body, headers=r.headers).json()
    assert preview["total"] == {"epsilon": "1.25", "delta": "0"}
    refused = r.client.post("/v1/aggregate-batch", json=body, headers=r.headers)
    assert refused.status_code == 409 and r.spent() == "0"
    released = r.client.post("/v1/aggregate-batch", json={**body, "queries": queries[:2]}, headers=r.headers)
    assert released.status_code == 200, released.text
    assert [x["template"] for x in released.json()["result"]["releases"]] == [COUNT, "wage-base-total"]
    assert released.json()["privacy_spent"]["epsilon"] == "0.75" and r.spent() == "0.75"


def test_deny_by_default_and_emergency_stop(research: Callable[..., Research]) -> None:
    r = research()
    assert r.release("no-such-template").status_code == 404
    assert r.release(COUNT, purpose="credit_assessment").status_code == 403
    business = research(who="demo-business")
    assert business.release(COUNT).status_code == 403
    admin = research(who="demo-admin")
    stop = {"kind": "service", "name": COUNT, "reason": "under review"}
    assert admin.client.post("/v1/admin/freeze", json=stop, headers=admin.headers).status_code == 201
    frozen = r.release(COUNT, parameters=BY_REGION)
    assert frozen.status_code == 403 and "under review" in frozen.json()["detail"]
    listed = [t["name"] for t in r.client.get("/v1/aggregate", headers=r.headers).json()["templates"]]
    assert COUNT in listed and "enterprise-registration" not in listed
    assert r.client.post("/v1/verify/contributors-count", json={"purpose": "public_research", "claims": [
        {"keys": {"x": "y"}, "checks": {"a": True}}]}, headers=r.headers).status_code == 404  # fmt: skip


@pytest.mark.parametrize("template", ["payroll-count", "payroll-persons", "payroll-sum", "payroll-mean",
                                      "payroll-histogram", "payroll-median"])  # fmt: skip
def test_every_measure_releases_the_same_shape(research: Callable[..., Research], template: str) -> None:
    r = research()
    first = r.release(template, parameters=BY_REGION).json()["result"]
    preview = r.preview(template, parameters=BY_REGION).json()["queries"][0]
    assert len(first["rows"]) == preview["rows"]
    keys = {tuple(sorted(row)) for row in first["rows"]}
    assert len(keys) == 1  # one row shape, whatever the data
    assert [row["group"]["region"] for row in first["rows"]][:: len(first["rows"]) // 4] == [
        "north", "south", "east", "west"]  # fmt: skip


def test_a_failure_before_the_read_returns_the_charge_and_after_it_keeps_it(
    research: Callable[..., Research], monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway import privacy
    from gateway.engine import Domain

    r = research()
    real_snapshot = Domain.snapshot

    def unopenable(self: Domain, dataset: str, version: str) -> Any:
        from gateway.errors import DependencyError

        raise DependencyError("the data domain cannot be opened")

    monkeypatch.setattr(Domain, "snapshot", unopenable)
    before = r.release(COUNT, parameters=BY_REGION, epsilon="0.3")
    assert before.status_code == 503
    assert _spent_everywhere(r) == ["0", "0", "0"]
    monkeypatch.setattr(Domain, "snapshot", real_snapshot)

    def broken(*_args: Any) -> Any:
        raise RuntimeError("the mechanism failed")

    monkeypatch.setattr(privacy, "add_noise", broken)
    after = r.release(COUNT, parameters=BY_REGION, epsilon="0.3")
    assert after.status_code == 500 and "the mechanism failed" not in after.text
    assert _spent_everywhere(r) == ["0.3", "0.3", "0.3"]  # data was read: the charge stays
    view = r.client.get("/v1/budget", headers=r.headers).json()["budgets"]
    (levels,) = [b["levels"] for b in view if b["dataset"] == "social_insurance"]
    assert levels["grant"]["reserved"]["epsilon"] == "0"
    monkeypatch.undo()
    again = r.release(COUNT, parameters=BY_REGION, epsilon="0.3")
    assert again.status_code == 200 and again.json()["result"]["replayed"] is False
