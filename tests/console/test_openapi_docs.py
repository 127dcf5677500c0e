"""`/docs` works offline and the OpenAPI document says what each route really answers."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.console import openapi

EXTERNAL = re.compile(r"""(?:src|href|url)\s*[=(]\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


def _operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(p, m): op for p, methods in document["paths"].items() for m, op in methods.items()}


def test_docs_page_loads_only_from_this_origin(shared_client: TestClient) -> None:
    page = shared_client.get("/docs")
    assert page.status_code == 200
    assert not EXTERNAL.search(page.text), "the docs page names another host"
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-eval" not in policy
    assert "<script>" not in page.text  # no inline script: the start-up script is a file
    for asset in re.findall(r'(?:src|href)="(/docs/assets/[^"]+)"', page.text):
        got = shared_client.get(asset)
        assert got.status_code == 200, asset
        assert len(got.content) > 0


def test_docs_start_up_names_no_validator(shared_client: TestClient) -> None:
    script = shared_client.get("/docs/assets/docs.js").text
    assert "validatorUrl: null" in script and "/openapi.json" in script


def test_unknown_docs_asset_is_404(shared_client: TestClient) -> None:
    assert shared_client.get("/docs/assets/..%2Fsettings.py").status_code == 404
    assert shared_client.get("/docs/assets/swagger-initializer.js").status_code == 404


def test_bearer_scheme_is_declared_and_used(shared_client: TestClient) -> None:
    document = shared_client.get("/openapi.json").json()
    scheme = document["components"]["securitySchemes"][openapi.BEARER]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}
    operations = _operations(document)
    assert operations[("/v1/admin/freeze", "post")]["security"] == [{openapi.BEARER: []}]
    assert operations[("/v1/jobs", "post")]["security"] == [{openapi.BEARER: []}]
    assert "security" not in operations[("/v1/catalog", "get")]
    assert "security" not in operations[("/v1/token", "post")]


@pytest.mark.parametrize(
    ("path", "method", "expected", "absent"),
    [
        ("/v1/admin/freeze", "post", {"401", "403", "409", "422"}, {"429"}),
        ("/v1/admin/policy/proposals/{proposal_id}/approve", "post", {"401", "403", "404", "409", "422"}, set()),
        ("/v1/admin/policy/proposals/{proposal_id}/reject", "post", {"401", "403", "404", "409", "422"}, {"429"}),
        ("/v1/admin/policy/proposals/{proposal_id}/withdraw", "post", {"401", "403", "404", "409", "422"}, {"429"}),
        ("/v1/token", "post", {"422", "429"}, {"401", "403"}),
        ("/v1/catalog/{dataset}", "get", {"404", "422"}, {"401", "403", "409", "429"}),
        ("/v1/catalog", "get", set(), {"401", "403", "404", "422", "429"}),
        ("/v1/aggregate/{template}", "post", {"401", "403", "404", "409", "422", "429"}, set()),
        ("/v1/verify/{service}", "post", {"401", "403", "404", "409", "422", "429"}, set()),
        ("/v1/models/{model}/score", "post", {"401", "403", "404", "409", "422", "429"}, set()),
        ("/v1/objections", "post", {"401", "404", "422"}, {"429"}),
    ],
)
def test_each_route_documents_its_problems(
    shared_client: TestClient, path: str, method: str, expected: set[str], absent: set[str]
) -> None:
    operation = _operations(shared_client.get("/openapi.json").json())[(path, method)]
    documented = set(operation["responses"])
    assert expected <= documented
    assert not absent & documented
    for status in expected:
        content = operation["responses"][status]["content"]
        assert content["application/problem+json"]["schema"] == {"$ref": "#/components/schemas/Problem"}


def test_every_token_route_documents_401_and_the_refusals_it_gives(shared_client: TestClient) -> None:
    document = shared_client.get("/openapi.json").json()
    operations = _operations(document)
    routes = list(openapi.api_routes(shared_client.app))  # type: ignore[arg-type]
    assert len(routes) > 40
    assert sum(openapi.is_authenticated(r) for _p, r in routes) > 20
    for path, route in routes:
        for method in route.methods:
            responses = operations[(path, method.lower())]["responses"]
            if openapi.is_authenticated(route):
                assert "401" in responses, path
            if route.dependant.path_params:
                assert {"404", "422"} <= set(responses), path


def test_a_real_refusal_matches_the_documented_problem_shape(shared_client: TestClient) -> None:
    document = shared_client.get("/openapi.json").json()
    required = set(document["components"]["schemas"]["Problem"]["required"])
    refused = shared_client.get("/v1/admin/freezes")
    assert refused.status_code == 401
    assert required <= set(refused.json())
    assert "401" in _operations(document)[("/v1/admin/freezes", "get")]["responses"]
