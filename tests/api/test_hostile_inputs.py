"""Every route, every parameter: hostile values are refused with a 4xx that never repeats them.

Two sweeps over the OpenAPI document (see `hostile.py`), as an administrator, a business
consumer and a researcher:
- canary strings (SQL, traversal, NUL, markup, overlong, invisible characters) in every path
  and query parameter and every body leaf: no refusal shows any part of the canary, in its body
  or its headers;
- NUL, overlong, traversal, huge-number and wrong-type values in the same places: no 5xx.
Then the refusals the sweeps cannot reach with plausible bodies, each with an otherwise valid
request: unknown check fields, filters and group-by columns, purposes, names.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.hostile import CANARY, CANARY_STRINGS, Call, calls
from tests.conftest import Installation, bearer, get_token

NON_STRINGS: tuple[Any, ...] = (
    2**64,
    -(2**63) - 1,
    10**300,
    1e308,
    float("inf"),
    True,
    None,
    [],
    {"nested": [1, {"deeper": None}]},
    "\x00",
    "9" * 300,
    "../" * 40 + "etc/passwd",
    "x" * 5_000,
)

WHO_FOR = (
    ("/v1/admin/", "demo-admin"),
    ("/v1/aggregate", "demo-researcher"),
    ("/v1/budget", "demo-researcher"),
    ("/v1/jobs", "demo-researcher"),
    ("/v1/models/", "demo-researcher"),
    ("/v1/audit", "demo-auditor"),
)


@pytest.fixture
def swept(installation: Installation, make_client: Any) -> tuple[TestClient, dict[str, str]]:
    client: TestClient = make_client(installation.settings, raise_server_exceptions=False)
    tokens = {
        who: get_token(client, who, secret)
        for who, secret in installation.credentials.items()
        if who in {"demo-admin", "demo-business", "demo-researcher", "demo-auditor"}
    }
    return client, tokens


def _send(client: TestClient, tokens: dict[str, str], call: Call) -> Any:
    who = next((w for prefix, w in WHO_FOR if call.url.startswith(prefix)), "demo-business")
    headers = bearer(tokens.get(who, tokens["demo-admin"]))
    if call.form is not None:
        return client.request(
            call.method, call.url, params=call.params, data={k: str(v) for k, v in call.form.items()}, headers=headers
        )
    content = None if call.body is None else json.dumps(call.body).encode()
    if content is not None:
        headers["content-type"] = "application/json"
    return client.request(call.method, call.url, params=call.params, content=content, headers=headers)


def _shown(response: Any) -> str:
    headers = " ".join(f"{k}: {v}" for k, v in response.headers.items())
    return f"{response.text} {headers}".lower()


def test_no_refusal_repeats_a_value(swept: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = swept
    doc = client.get("/openapi.json").json()
    sent = echoed = 0
    failures: list[str] = []
    for call in calls(doc, CANARY_STRINGS):
        response = _send(client, tokens, call)
        sent += 1
        if response.status_code >= 500:
            failures.append(f"{call.method} {call.url} {call.where}: {response.status_code}")
        elif response.status_code >= 400 and CANARY in _shown(response):
            echoed += 1
            failures.append(f"{call.method} {call.url} {call.where}: {response.text[:200]}")
    assert sent > 500, sent  # the sweep reached every route
    assert not failures, "\n".join(failures[:30])


def test_no_input_is_a_server_error(swept: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = swept
    doc = client.get("/openapi.json").json()
    failures = []
    sent = 0
    for call in calls(doc, NON_STRINGS):
        response = _send(client, tokens, call)
        sent += 1
        if response.status_code >= 500:
            failures.append(f"{call.method} {call.url} {call.where}: {response.status_code} {response.text[:120]}")
    assert sent > 500, sent
    assert not failures, "\n".join(failures[:30])


CODE = "91110000100000000A"  # not a valid code: refused per claim, before data


def test_unknown_fields_are_refused_before_anything_is_signed(swept: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = swept
    for claim in (
        {"keys": {"credit_code": CODE}, "checks": {f"<{CANARY}>": True}},
        {"keys": {"credit_code": CODE}, "checks": {f"<{CANARY}>" * 20: True}},
        {"keys": {"credit_code": CODE, CANARY: "x"}, "checks": {"active": True}},
    ):
        response = client.post(
            "/v1/verify/enterprise-registration",
            json={
                "purpose": "credit_assessment",
                "claims": [{"keys": {"credit_code": CODE}, "checks": {"active": True}}, claim],
            },
            headers=bearer(tokens["demo-business"]),
        )
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert "receipt" not in response.json()
        assert CANARY not in _shown(response)
        assert response.json()["detail"].removeprefix("body.").startswith("claims.1.")


@pytest.mark.parametrize(
    ("url", "body"),
    [
        (
            "/v1/aggregate/contributors-count",
            {"purpose": "public_research", "parameters": {"filters": {CANARY: [CANARY]}}},
        ),
        ("/v1/aggregate/contributors-count", {"purpose": "public_research", "parameters": {"group_by": [CANARY]}}),
        ("/v1/aggregate/contributors-count", {"purpose": CANARY}),
        ("/v1/aggregate/contributors-count", {"purpose": "public_research", "epsilon": f"1{CANARY}"}),
        ("/v1/aggregate-batch/preview", {"purpose": "public_research", "queries": [{"template": CANARY}]}),
        ("/v1/models/penalties-regression/fit", {"purpose": CANARY}),
        (
            "/v1/jobs",
            {"service": CANARY, "purpose": "public_research", "code": "x", "datasets": ["a"], "outputs": ["o"]},
        ),
    ],
)
def test_domain_refusals_name_the_parameter_not_the_value(
    swept: tuple[TestClient, dict[str, str]], url: str, body: dict[str, Any]
) -> None:
    client, tokens = swept
    response = client.post(url, json=body, headers=bearer(tokens["demo-researcher"]))
    assert 400 <= response.status_code < 500, response.text
    assert CANARY not in _shown(response)


def test_epsilon_true_is_not_one(swept: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = swept
    response = client.post(
        "/v1/aggregate/contributors-count/preview",
        json={"purpose": "public_research", "epsilon": True},
        headers=bearer(tokens["demo-researcher"]),
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["location"].startswith("body.epsilon")


def test_objection_subject_never_opens_a_file_outside_the_catalogue(
    swept: tuple[TestClient, dict[str, str]], installation: Installation, caplog: pytest.LogCaptureFixture
) -> None:
    client, tokens = swept
    secrets = list(installation.credentials.values())
    for subject in (
        "../../demo-credentials",
        "../catalog/enterprise_registry",
        "/etc/passwd",
        "enterprise_registry\x00",
    ):
        response = client.post(
            "/v1/objections",
            json={"about": "dataset", "subject": subject, "text": "wrong"},
            headers=bearer(tokens["demo-business"]),
        )
        assert response.status_code == 422, response.text
        assert not any(s in response.text or s in caplog.text for s in secrets)
    assert installation.settings.state_dir.is_dir()
    found = client.post(
        "/v1/objections",
        json={"about": "dataset", "subject": "enterprise_registry", "text": "wrong"},
        headers=bearer(tokens["demo-business"]),
    )
    assert found.status_code == 201, found.text


def test_output_check_paths_take_only_checked_ids_and_names(swept: tuple[TestClient, dict[str, str]]) -> None:
    """The output-check routes once took any string as the job id and the output name: on a
    PostgreSQL job store a NUL in it was a 500 (text cannot hold NUL). They take the checked
    id and name types of every other route, refused before any store is asked."""
    client, tokens = swept
    admin = bearer(tokens["demo-admin"])
    for path in ("/v1/admin/output-checks/job-%00x", "/v1/admin/output-checks/" + "j" * 300):
        refused = client.get(path, headers=admin)
        assert refused.status_code == 422, (path, refused.status_code)
        assert "job_id" in refused.text and "%00" not in refused.text
    for output in ("a%00b", "x" * 100, "..%2F..%2Fkeys"):
        refused = client.post(
            f"/v1/admin/output-checks/job-0011223344556677/{output}/release", headers=admin, json={"reason": "ok"}
        )
        assert refused.status_code in (404, 422), (output, refused.status_code)
        if refused.status_code == 422:
            assert "output" in refused.text
    assert client.post("/v1/admin/output-checks/job-0011223344556677/a%00b/release", headers=admin,
                       json={"reason": "ok"}).status_code == 422  # fmt: skip
