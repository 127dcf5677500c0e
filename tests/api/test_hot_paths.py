"""The hot paths (verification, scoring) decode their bodies with msgspec: the API document
describes exactly what is decoded, and refusals keep the shape and the discretion of every route."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from fastapi.testclient import TestClient

from gateway.api.hot_bodies import ScoreRequest, VerifyRequest, openapi_body, refusal
from tests.conftest import Installation, bearer, get_token

ECHO = "ECHO-ME-7f3a"


@pytest.mark.parametrize(
    ("path", "kind"), [("/v1/verify/{service}", VerifyRequest), ("/v1/models/{model}/score", ScoreRequest)]
)
def test_the_api_document_shows_the_msgspec_schema_of_each_hot_body(
    shared_client: TestClient, path: str, kind: type[Any]
) -> None:
    operation = shared_client.get("/openapi.json").json()["paths"][path]["post"]
    assert operation["requestBody"] == openapi_body(kind)["requestBody"]
    # and that schema is msgspec's own: definitions inlined, and no nulls (FastAPI drops them)
    _schemas, definitions = msgspec.json.schema_components([kind], ref_template="#/$defs/{name}")
    documented = operation["requestBody"]["content"]["application/json"]["schema"]
    assert "$ref" not in json.dumps(documented)
    assert set(documented["properties"]) == set(definitions[kind.__name__]["properties"])
    assert documented["required"] == definitions[kind.__name__]["required"]
    assert documented["additionalProperties"] is False


@pytest.fixture(scope="module")
def business(shared_client: TestClient, session_installation: Installation) -> dict[str, str]:
    return bearer(get_token(shared_client, "demo-business", session_installation.credentials["demo-business"]))


def _claim(**extra: Any) -> dict[str, Any]:
    return {"keys": {"credit_code": "91110000100000000A"}, "checks": {"active": True}, **extra}


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ({"purpose": "credit_assessment", "claims": [_claim(**{ECHO: 1})]}, "body.claims.0"),
        ({"purpose": "credit_assessment", "claims": [_claim()], ECHO: 1}, "body"),
        (
            {"purpose": "credit_assessment", "claims": [{"keys": {ECHO * 10: "x"}, "checks": {"a": True}}]},
            "body.claims.0.keys.<key>",
        ),
        ({"purpose": f"Bad{ECHO}", "claims": [_claim()]}, "body.purpose"),
        (
            {"purpose": "credit_assessment", "claims": [{"keys": {"credit_code": ECHO * 10}, "checks": {"a": 1}}]},
            "body.claims.0.keys.<key>",
        ),
        ({"purpose": "credit_assessment", "claims": [_claim(consent_ref=ECHO * 20)]}, "body.claims.0.consent_ref"),
        (
            {"purpose": "credit_assessment", "claims": [{"keys": {"credit_code": "x"}, "checks": {"a": 1.5}}]},
            "body.claims.0.checks.<key>",
        ),
        (
            {"purpose": "credit_assessment", "claims": [{"keys": {"credit_code": "x"}, "checks": {"a": 2**70}}]},
            "body.claims.0.checks.<key>",
        ),
        ({"purpose": "credit_assessment", "claims": []}, "body.claims"),
        ({"claims": [_claim()]}, "body.purpose"),
        ([ECHO], "body"),
    ],
)
def test_a_bad_verification_body_is_located_and_never_echoed(
    shared_client: TestClient, business: dict[str, str], body: Any, location: str
) -> None:
    response = shared_client.post("/v1/verify/enterprise-registration", json=body, headers=business)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert ECHO not in response.text
    assert location in {e["location"] for e in response.json()["errors"]}, response.text


def test_a_bad_path_name_is_refused_as_fastapi_would(shared_client: TestClient, business: dict[str, str]) -> None:
    response = shared_client.post(
        f"/v1/models/{ECHO}$/score", json={"purpose": "credit_assessment", "keys": ["x"]}, headers=business
    )
    assert response.status_code == 422
    assert ECHO not in response.text
    assert response.json()["errors"][0]["location"] == "path.model"


def test_other_methods_on_a_hot_path_still_get_405(shared_client: TestClient, business: dict[str, str]) -> None:
    response = shared_client.get("/v1/verify/enterprise-registration", headers=business)
    assert response.status_code == 405 and "POST" in response.headers["allow"]


def test_unauthenticated_hot_requests_are_refused_before_the_body_is_read(shared_client: TestClient) -> None:
    response = shared_client.post("/v1/verify/enterprise-registration", content=b"{not json")
    assert response.status_code == 401


@pytest.mark.parametrize(
    "message",
    [
        f"Object contains unknown field `{ECHO}` - at `$.claims[0]`",
        f"Invalid enum value '{ECHO}'",
        f"Expected `str`, got `{ECHO}`",
        f"Something new about {ECHO}",
    ],
)
def test_msgspec_messages_that_could_hold_input_are_never_passed_on(message: str) -> None:
    error = refusal(message)
    assert ECHO not in json.dumps(error)
    assert error["loc"][0] == "body"
