"""The problem+json shape, pinned: every error class through a route, and framework errors."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from gateway import errors
from gateway.app import create_app
from tests.conftest import Installation, bearer, get_token

PROBLEM_KEYS = {"type", "title", "status", "detail", "instance"}


def _assert_problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body.keys() >= PROBLEM_KEYS
    assert body["type"] == f"{errors.PROBLEM_BASE}{slug}"
    assert body["status"] == status
    assert body["instance"] == f"urn:veilgate:request:{response.headers['x-request-id']}"
    assert "Traceback" not in response.text
    return body


def _instantiate(cls: type[errors.VeilgateError]) -> errors.VeilgateError:
    if issubclass(cls, errors.RateLimited):
        return cls("slow down", retry_after_seconds=7)
    if cls is errors.Unauthenticated:
        return errors.Unauthenticated("who are you")
    return cls("a detail written for the caller")


@pytest.mark.parametrize("cls", errors.all_problem_types(), ids=lambda c: c.__name__)
def test_every_error_class_renders_as_a_problem(
    session_installation: Installation, cls: type[errors.VeilgateError]
) -> None:
    app = create_app(session_installation.settings)
    router = APIRouter()

    @router.get("/raise")
    def raise_it() -> None:
        raise _instantiate(cls)

    app.include_router(router)
    with TestClient(app) as client:
        response = client.get("/raise")
    body = _assert_problem(response, cls.status, cls.type_slug)
    assert body["title"] == cls.title
    if issubclass(cls, errors.RateLimited):
        assert response.headers["retry-after"] == "7"


def test_unexpected_exception_is_a_bare_500(
    session_installation: Installation, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(session_installation.settings)
    router = APIRouter()

    @router.get("/boom")
    def boom() -> None:
        raise RuntimeError("SELECT secret FROM records WHERE name = 'leaky'")

    app.include_router(router)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
    body = _assert_problem(response, 500, "internal-error")
    assert "SELECT" not in response.text and "leaky" not in response.text
    assert body["detail"].startswith("an internal error occurred")
    assert response.headers["x-request-id"] in caplog.text


def test_404_and_405(shared_client: TestClient) -> None:
    _assert_problem(shared_client.get("/v1/nothing-here"), 404, "not-found")
    _assert_problem(shared_client.get("/v1/catalog/no_such_dataset"), 404, "not-found")
    response = shared_client.delete("/v1/catalog")
    _assert_problem(response, 405, "method-not-allowed")
    assert "GET" in response.headers["allow"]


def test_malformed_json_body(shared_client: TestClient, session_installation: Installation) -> None:
    token = get_token(shared_client, "demo-admin", session_installation.credentials["demo-admin"])
    response = shared_client.post(
        "/v1/admin/consumers",
        content=b'{"client_id": "x",',
        headers={**bearer(token), "content-type": "application/json"},
    )
    body = _assert_problem(response, 422, "invalid-request")
    assert body["errors"][0]["location"].startswith("body")


def test_validation_errors_name_the_field_and_never_echo_the_value(
    shared_client: TestClient, session_installation: Installation
) -> None:
    token = get_token(shared_client, "demo-admin", session_installation.credentials["demo-admin"])
    hostile = "<script>ECHO-ME</script>"
    response = shared_client.post(
        "/v1/admin/consumers",
        json={"client_id": hostile, "organisation": "x", "roles": ["consumer"], "extra": hostile},
        headers=bearer(token),
    )
    body = _assert_problem(response, 422, "invalid-request")
    assert "ECHO-ME" not in response.text
    located = {(e["location"], e["message"].startswith("an unknown field")) for e in body["errors"]}
    assert {("body.client_id", False), ("body", True)} <= located


def test_oversized_body_is_refused_before_it_is_read(shared_client: TestClient) -> None:
    response = shared_client.post(
        "/v1/token", content=b"x" * 2_000_000, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    _assert_problem(response, 413, "payload-too-large")


def test_sample_size_limits(shared_client: TestClient) -> None:
    _assert_problem(shared_client.get("/v1/catalog/enterprise_registry/sample?rows=100000"), 422, "invalid-request")
    _assert_problem(shared_client.get("/v1/catalog/enterprise_registry/sample?rows=abc"), 422, "invalid-request")


@pytest.mark.parametrize(
    ("path", "required"),
    [("/v1/verify/{service}", {"purpose", "claims"}), ("/v1/models/{model}/score", {"purpose", "keys"})],
)
def test_hot_routes_that_read_their_own_body_document_it(
    shared_client: TestClient, path: str, required: set[str]
) -> None:
    """These routes parse their body themselves (`deps.json_body`); the API docs still show it."""
    operation = shared_client.get("/openapi.json").json()["paths"][path]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert operation["requestBody"]["required"] is True
    assert required <= set(schema["properties"]) and required <= set(schema["required"])


def test_a_hot_route_refuses_a_bad_body_like_any_other(
    shared_client: TestClient, session_installation: Installation
) -> None:
    token = get_token(shared_client, "demo-business", session_installation.credentials["demo-business"])
    response = shared_client.post(
        "/v1/verify/enterprise-registration",
        content=b"{not json",
        headers={**bearer(token), "content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["location"].startswith("body")
    missing = shared_client.post("/v1/models/enterprise-credit-risk/score", json={"keys": []}, headers=bearer(token))
    assert missing.status_code == 422 and "body.purpose" in {e["location"] for e in missing.json()["errors"]}
