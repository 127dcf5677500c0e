"""/metrics: who may read it, what it counts, and that nothing a caller sent or a record holds
appears in it (keys, names, secrets, tokens, the data's canary, raw paths)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from gateway.observability import metrics
from tests.conftest import CANARY, Installation, bearer, get_token

AUDITOR = "demo-auditor"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float:
    wanted = tuple(sorted(labels.items()))
    return samples(text).get((name, wanted), 0.0)


def scrape(client: TestClient, token: str) -> str:
    response = client.get("/metrics", headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def a_real_enterprise(installation: Installation) -> dict[str, Any]:
    table = pq.read_table(installation.source / "enterprise_registry.parquet")
    return next(r for r in table.slice(1, 200).to_pylist() if r["status"] == "active")


@pytest.fixture
def served(installation: Installation, make_client: Callable[..., TestClient]) -> tuple[TestClient, dict[str, str]]:
    client = make_client(installation.settings)
    tokens = {who: get_token(client, who, secret) for who, secret in installation.credentials.items()}
    return client, tokens


def test_only_auditors_and_administrators_read_metrics(served: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = served
    assert client.get("/metrics").status_code == 401
    for who in ("demo-business", "demo-researcher"):
        assert client.get("/metrics", headers=bearer(tokens[who])).status_code == 403
    for who in ("demo-auditor", "demo-admin"):
        assert client.get("/metrics", headers=bearer(tokens[who])).status_code == 200


def test_metrics_count_real_traffic_and_hold_no_key_secret_or_value(
    served: tuple[TestClient, dict[str, str]], installation: Installation
) -> None:
    client, tokens = served
    before = scrape(client, tokens[AUDITOR])
    row = a_real_enterprise(installation)
    key, name = str(row["credit_code"]), str(row["legal_representative"])
    verify = {
        "purpose": "credit_assessment",
        "claims": [{"keys": {"credit_code": key}, "checks": {"legal_representative": name, "active": True}}],
    }
    consumer, researcher = bearer(tokens["demo-business"]), bearer(tokens["demo-researcher"])
    assert client.post("/v1/verify/enterprise-registration", json=verify, headers=consumer).status_code == 200
    aggregate = {"purpose": "public_research", "parameters": {"group_by": ["region"]}, "epsilon": "1"}
    assert client.post("/v1/aggregate/wage-base-mean", json=aggregate, headers=researcher).status_code == 200
    # Hostile traffic: keys, names and the canary in paths, queries, headers and bodies.
    hostile_paths = [
        f"/v1/verify/{CANARY}-{key}",
        f"/v1/catalog/{key}",
        f"/v1/catalog/{CANARY}/sample?rows=5&key={key}",
        f"/{CANARY}/{key}",
        f"/v1/audit/leaves/{key}",
        "/v1/admin/consumers/" + CANARY.lower(),
    ]
    for path in hostile_paths:
        client.get(path, headers=consumer)
        client.post(path, json={"claims": [{"keys": {"credit_code": CANARY}}]}, headers=consumer)
    hostile = {
        "purpose": "credit_assessment",
        "claims": [{"keys": {"credit_code": CANARY + key}, "checks": {"legal_representative": CANARY}}],
    }
    client.post("/v1/verify/enterprise-registration", json=hostile, headers=consumer)
    client.post("/v1/verify/enterprise-registration", content=b'{"' + CANARY.encode() + b'": ', headers=consumer)
    client.post("/v1/verify/enterprise-registration", content=b"x" * 2_000_000, headers=consumer)
    client.post("/v1/token", data={"grant_type": "client_credentials", "client_id": CANARY, "client_secret": key})
    client.get("/v1/me", headers={"Authorization": f"Bearer {CANARY}.{key}.x"})
    client.request("BREW", f"/{CANARY}", headers=consumer)
    after = scrape(client, tokens[AUDITOR])

    secrets_and_values = [CANARY, CANARY.lower(), key, name, *installation.credentials.values(), *tokens.values()]
    leaked = [s for s in secrets_and_values if s in after]
    assert leaked == [], "the exposition holds what a caller sent or a record holds"

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    verify_route = {"method": "POST", "route": "/v1/verify/{service}"}
    answered = grew("veilgate_http_requests_total", **verify_route, status="200")
    assert answered >= 1  # a claim about no such key is answered too (no match), and signed
    assert grew("veilgate_http_request_duration_seconds_count", **verify_route) >= 4
    assert grew("veilgate_http_requests_total", method="GET", route="(unmatched)", status="404") >= 1
    assert grew("veilgate_http_requests_total", method="other", route="(unmatched)", status="404") >= 1
    assert grew("veilgate_releases_total", dataset="enterprise_registry") == answered
    assert grew("veilgate_releases_total", dataset="social_insurance") == 1
    assert grew("veilgate_epsilon_spent_total", dataset="social_insurance") == pytest.approx(1.0)
    assert grew("veilgate_epsilon_spent_total", dataset="enterprise_registry") == 0
    for reason in ("unauthenticated", "payload-too-large", "invalid-request", "not-found"):
        assert grew("veilgate_refusals_total", reason=reason) >= 1, reason
    assert grew("veilgate_commit_batch_size_count", store="audit") >= 1
    assert grew("veilgate_commit_duration_seconds_count", store="audit") >= 1
    assert "# TYPE veilgate_jobs gauge" in after

    # Every label value is from its vocabulary or a name an administrator chose.
    allowed = {
        "method": metrics.METHODS | {metrics.OTHER},
        "status": {str(s) for s in range(100, 600)} | {metrics.OTHER},
        "reason": metrics._problem_types() | {metrics.OTHER},
        "store": metrics.STORES | {metrics.OTHER},
    }
    templates = set(client.app.openapi()["paths"]) | {"/metrics", "(unmatched)", metrics.OTHER}  # type: ignore[attr-defined]
    earlier = samples(before)
    for (sample, labels), figure in samples(after).items():
        if earlier.get((sample, labels)) == figure:
            continue  # other tests' apps in this process
        for label, text in labels:
            if label in allowed:
                assert text in allowed[label], (label, text)
            elif label == "route":
                assert text in templates, text
            elif label in ("dataset", "state"):
                assert re.fullmatch(r"[a-z][a-z0-9_ -]{0,62}", text), text
            else:
                assert label in ("le", "quantile"), label


def test_label_values_outside_their_vocabulary_count_as_other() -> None:
    before = metrics.REFUSALS.labels(metrics.OTHER)._value.get()
    metrics.observe_request("GET", f"/x/{CANARY}?k=1 2", 418, 0.001, f"{CANARY}-reason")
    assert metrics.REFUSALS.labels(metrics.OTHER)._value.get() == before + 1
    assert metrics.route_label("/v1/catalog/{dataset}") == "/v1/catalog/{dataset}"
    assert metrics.route_label("/x y") == metrics.OTHER
    assert metrics.route_label(None) == "(unmatched)"
    assert metrics.dataset_label("Enterprise/../x") == metrics.OTHER
    assert metrics.dataset_label(None) == "none"
    states = metrics.JobStates(lambda: {"submitted": 2, "awaiting output check": 1, f"{CANARY}\n": 3})
    exposed = {tuple(s.labels.values()): s.value for family in states.collect() for s in family.samples}
    assert exposed == {("submitted",): 2, ("awaiting output check",): 1, (metrics.OTHER,): 3}


def test_one_label_holds_a_bounded_number_of_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_seen", {})
    monkeypatch.setattr(metrics, "MAX_VALUES", 3)
    labels = [metrics.route_label(f"/r{i}") for i in range(5)]
    assert labels == ["/r0", "/r1", "/r2", metrics.OTHER, metrics.OTHER]
    assert metrics.route_label("/r1") == "/r1"
