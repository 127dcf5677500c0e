"""The trust core over HTTP: every request leaves a leaf before its response, results carry
receipts that match the body, and a consumer can prove its request was logged."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, Request, Response
from fastapi.testclient import TestClient

from gateway.api.auditing import allowed_event, released_response
from gateway.api.deps import principal
from gateway.app import create_app
from gateway.domain import merkle
from gateway.domain.principal import Principal
from gateway.domain.trail import AuditLeaf, digest
from gateway.errors import AuditUnavailable
from gateway.services.audit_trail import make_checkpoint, verify_log
from gateway.services.receipts import verify_checkpoint, verify_receipt
from gateway.services.release import prepare_release, release
from gateway.services.runtime import Runtime
from tests.conftest import CANARY, Installation, bearer, get_token

ENTERPRISE_KEY = "91330106MA2B3C4D5X"


def _with_result_route(app: FastAPI) -> FastAPI:
    """A result-bearing route wired like the real services: release, then respond."""
    rt: Runtime = app.state.runtime

    @app.post("/v1/test/echo")
    def echo(request: Request, _who: Annotated[Principal, Depends(principal)], body: dict[str, Any]) -> Response:
        pending = prepare_release(
            rt,
            allowed_event(request),
            service="echo",
            request=body,
            result={"answer": "match", "items": [1, 2.5, "三"]},
            dataset="enterprise_registry",
            dataset_version="v" * 32,
            subjects=[rt.audit.pseudonym("enterprise", ENTERPRISE_KEY)],
        )
        return released_response(request, release(rt, pending))

    return app


@pytest.fixture
def app(installation: Installation) -> FastAPI:
    return _with_result_route(create_app(installation.settings))


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


def _token(client: TestClient, installation: Installation, who: str) -> dict[str, str]:
    return bearer(get_token(client, who, installation.credentials[who]))


def _leaf_of(rt: Runtime, request_id: str) -> AuditLeaf:
    from gateway.state.ports import LeafFilter

    found = [leaf for leaf in rt.audit.find(LeafFilter(), limit=1000) if leaf.request_id == request_id]
    assert len(found) == 1, f"{len(found)} leaves for request {request_id}"
    return found[0]


def test_a_result_carries_a_receipt_whose_payload_is_the_body(
    client: TestClient, app: FastAPI, installation: Installation
) -> None:
    response = client.post(
        "/v1/test/echo", json={"claim": ENTERPRISE_KEY}, headers=_token(client, installation, "demo-business")
    )
    assert response.status_code == 200, response.text
    body = response.json()
    receipt = body.pop("receipt")
    jwks = client.get("/.well-known/jwks.json").json()
    document = verify_receipt(receipt, jwks)
    assert document.model_dump(mode="json") == body
    assert document.request_id == response.headers["x-request-id"]
    assert document.consumer == "demo-business"
    assert document.request_digest == digest({"claim": ENTERPRISE_KEY})
    leaf = _leaf_of(app.state.runtime, document.request_id)
    assert leaf.seq == document.audit_seq
    assert leaf.result_digest == digest(document.result)
    assert leaf.service == "echo" and leaf.status == 200 and leaf.decision == "allowed"
    assert len(leaf.subjects) == 1 and ENTERPRISE_KEY not in leaf.model_dump_json()


def test_a_consumer_proves_its_request_was_logged(client: TestClient, app: FastAPI, installation: Installation) -> None:
    """The steps docs/receipts.md gives a consumer, done with public endpoints only."""
    headers = _token(client, installation, "demo-business")
    body = client.post("/v1/test/echo", json={"claim": "x"}, headers=headers).json()
    for _ in range(5):
        client.get("/v1/catalog")
    rt: Runtime = app.state.runtime
    assert make_checkpoint(rt.audit, rt.receipt_keys, issuer=rt.settings.issuer) is not None
    jwks = client.get("/.well-known/jwks.json").json()
    document = verify_receipt(body["receipt"], jwks)
    checkpoint = client.get("/v1/audit/checkpoints").json()["checkpoints"][-1]
    head = verify_checkpoint(checkpoint["jws"], jwks)
    leaf = client.get(f"/v1/audit/leaves/{document.audit_seq}", headers=headers).json()
    assert leaf["request_id"] == document.request_id
    assert leaf["result_digest"] == digest(document.result)
    proof = client.get(f"/v1/audit/proof/inclusion?leaf={document.audit_seq}&size={head.size}").json()
    leaf_hash = merkle.leaf_hash(AuditLeaf.model_validate(leaf).encode())
    assert leaf_hash.hex() == proof["leaf_hash"]
    path = [bytes.fromhex(h) for h in proof["audit_path"]]
    assert merkle.is_valid_inclusion(document.audit_seq, head.size, leaf_hash, path, bytes.fromhex(head.root))
    assert not merkle.is_valid_inclusion(document.audit_seq, head.size, leaf_hash, path, bytes(32))


def test_a_witness_checks_consistency_between_two_checkpoints(client: TestClient, app: FastAPI) -> None:
    rt: Runtime = app.state.runtime
    client.get("/v1/catalog")
    first = make_checkpoint(rt.audit, rt.receipt_keys, issuer=rt.settings.issuer)
    for _ in range(7):
        client.get("/v1/catalog")
    second = make_checkpoint(rt.audit, rt.receipt_keys, issuer=rt.settings.issuer)
    assert first is not None and second is not None
    proof = client.get(f"/v1/audit/proof/consistency?first={first.size}&second={second.size}").json()
    hashes = [bytes.fromhex(h) for h in proof["proof"]]
    assert merkle.is_valid_consistency(
        first.size, second.size, bytes.fromhex(first.root), bytes.fromhex(second.root), hashes
    )
    listed = client.get(f"/v1/audit/checkpoints?after_size={first.size}").json()
    assert [c["size"] for c in listed["checkpoints"]] == [second.size]


def test_every_request_is_audited_refusals_included(
    client: TestClient, app: FastAPI, installation: Installation
) -> None:
    rt: Runtime = app.state.runtime
    cases = [
        client.get("/v1/me"),  # no token
        client.get("/v1/me", headers=bearer("not.a.token")),
        client.post(
            "/v1/token",
            data={"grant_type": "client_credentials", "client_id": "demo-business", "client_secret": "wrong"},
        ),
        client.get("/v1/no/such/route"),
        client.get("/v1/catalog/no_such_dataset"),
        client.get("/v1/admin/datasets", headers=_token(client, installation, "demo-business")),
        client.post(
            "/v1/test/echo",
            content=b"x" * (installation.settings.max_body_bytes + 1),
            headers={"content-type": "application/json"},
        ),
        client.get("/v1/audit/proof/inclusion?leaf=0&size=999999"),
    ]
    expected = [
        (401, "unauthenticated"),
        (401, "unauthenticated"),
        (401, "unauthenticated"),
        (404, "not-found"),
        (404, "not-found"),
        (403, "policy-denied"),
        (413, "payload-too-large"),
        (422, "invalid-request"),
    ]
    for response, (status, reason) in zip(cases, expected, strict=True):
        assert response.status_code == status
        leaf = _leaf_of(rt, response.headers["x-request-id"])
        assert (leaf.status, leaf.reason, leaf.decision) == (status, reason, "refused")
    assert _leaf_of(rt, cases[2].headers["x-request-id"]).principal is None  # an unproven claim is not a principal
    assert _leaf_of(rt, cases[3].headers["x-request-id"]).route == "(no route)"  # the raw path is not logged


def test_probes_are_not_audited(client: TestClient, app: FastAPI) -> None:
    rt: Runtime = app.state.runtime
    before = rt.audit.size()
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert rt.audit.size() == before


def test_nothing_leaves_when_the_audit_log_refuses(
    client: TestClient, app: FastAPI, installation: Installation
) -> None:
    rt: Runtime = app.state.runtime
    headers = _token(client, installation, "demo-business")

    def refuse(*_args: object, **_kwargs: object) -> object:
        raise AuditUnavailable("disk full")

    async def refuse_async(*_args: object, **_kwargs: object) -> object:
        raise AuditUnavailable("disk full")

    rt.audit.append = refuse  # type: ignore[method-assign]
    rt.audit.append_async = refuse_async  # type: ignore[method-assign]
    for response in (client.get("/v1/me", headers=headers), client.get("/v1/catalog")):
        assert response.status_code == 503
        assert response.json()["type"].endswith("/audit-unavailable")
        assert "demo-business" not in response.text and "datasets" not in response.text
    echoed = client.post("/v1/test/echo", json={}, headers=headers)
    assert echoed.status_code == 503 and "receipt" not in echoed.text


def test_a_leaf_is_shown_to_its_principal_and_auditors_only(client: TestClient, installation: Installation) -> None:
    business = _token(client, installation, "demo-business")
    seq = client.post("/v1/test/echo", json={}, headers=business).json()["audit_seq"]
    assert client.get(f"/v1/audit/leaves/{seq}", headers=business).status_code == 200
    assert (
        client.get(f"/v1/audit/leaves/{seq}", headers=_token(client, installation, "demo-auditor")).status_code == 200
    )
    other = client.get(f"/v1/audit/leaves/{seq}", headers=_token(client, installation, "demo-researcher"))
    assert other.status_code == 404
    assert client.get(f"/v1/audit/leaves/{seq}").status_code == 401
    assert client.get("/v1/audit/leaves/999999", headers=business).status_code == 404


def test_admin_audit_search_filters_pages_and_needs_a_role(client: TestClient, installation: Installation) -> None:
    business = _token(client, installation, "demo-business")
    for _ in range(3):
        client.post("/v1/test/echo", json={}, headers=business)
    client.get("/v1/me")
    auditor = _token(client, installation, "demo-auditor")
    assert client.get("/v1/admin/audit", headers=business).status_code == 403
    found = client.get("/v1/admin/audit?service=echo&principal=demo-business&limit=2", headers=auditor).json()
    assert len(found["leaves"]) == 2 and found["next_after"] == found["leaves"][-1]["seq"]
    rest = client.get(f"/v1/admin/audit?service=echo&after={found['next_after']}", headers=auditor).json()
    assert len(rest["leaves"]) == 1 and rest["next_after"] is None
    refused = client.get("/v1/admin/audit?decision=refused", headers=auditor).json()["leaves"]
    assert refused and all(leaf["decision"] == "refused" for leaf in refused)
    future = client.get("/v1/admin/audit?since=2999-01-01T00:00:00%2B08:00", headers=auditor).json()
    assert future["leaves"] == []
    for bad in (
        "since=yesterday",
        "since=2026-01-01T00:00:00",
        "limit=0",
        "limit=1001",
        "decision=maybe",
        "colour=red",
    ):
        assert client.get(f"/v1/admin/audit?{bad}", headers=auditor).status_code == 422, bad


@pytest.mark.parametrize(
    "query",
    ["leaf=-1&size=1", "leaf=0&size=0", "leaf=5&size=5", "leaf=0&size=999999", "leaf=x&size=1", "leaf=0"],
)
def test_bad_proof_parameters_are_refused(client: TestClient, query: str) -> None:
    client.get("/v1/catalog")
    assert client.get(f"/v1/audit/proof/inclusion?{query}").status_code == 422


def test_consistency_parameters_are_checked(client: TestClient) -> None:
    for _ in range(3):
        client.get("/v1/catalog")
    assert client.get("/v1/audit/proof/consistency?first=3&second=2").status_code == 422
    assert client.get("/v1/audit/proof/consistency?first=0&second=2").status_code == 422
    assert client.get("/v1/audit/proof/consistency?first=1&second=999999").status_code == 422
    assert client.get("/v1/audit/proof/consistency?first=2&second=2").json()["proof"] == []


def test_jwks_publishes_receipt_keys_only_and_no_private_part(client: TestClient, app: FastAPI) -> None:
    rt: Runtime = app.state.runtime
    jwks = client.get("/.well-known/jwks.json").json()
    kids = {k["kid"] for k in jwks["keys"]}
    assert kids == {k.kid for k in rt.receipt_keys.keys}
    assert not kids & {k.kid for k in rt.token_keys.keys}
    for key in jwks["keys"]:
        assert "d" not in key and key["alg"] == "EdDSA" and key["crv"] == "Ed25519"
        assert None not in key.values()


def test_a_rotation_from_the_cli_reaches_the_running_server(
    client: TestClient, app: FastAPI, installation: Installation
) -> None:
    from gateway.signing import KeyRing

    headers = _token(client, installation, "demo-business")
    before = client.post("/v1/test/echo", json={}, headers=headers).json()["receipt"]
    KeyRing.load(installation.settings.receipt_keys_dir).rotate()  # what `veilgate keys rotate` does
    time.sleep(installation.settings.state_recheck_seconds)  # then the server looks at the ring again
    after = client.post("/v1/test/echo", json={}, headers=headers).json()["receipt"]
    jwks = client.get("/.well-known/jwks.json").json()
    assert len(jwks["keys"]) == 2
    assert verify_receipt(before, jwks).audit_seq < verify_receipt(after, jwks).audit_seq
    assert json.loads(json.dumps(jwks))["keys"][0]["status"] == "retired"


def test_the_log_verifies_after_a_session_and_holds_no_canary(
    client: TestClient, app: FastAPI, installation: Installation
) -> None:
    headers = _token(client, installation, "demo-business")
    for dataset in ("enterprise_registry", "social_insurance", "tax_compliance"):
        client.get(f"/v1/catalog/{dataset}/sample?rows=50")
        client.post("/v1/test/echo", json={"dataset": dataset}, headers=headers)
    rt: Runtime = app.state.runtime
    make_checkpoint(rt.audit, rt.receipt_keys, issuer=rt.settings.issuer)
    report = verify_log(rt.audit, rt.receipt_keys.jwks())
    assert report.ok, report.failure
    assert report.checkpoints == len(rt.audit.checkpoints()) >= 1
    assert report.leaves == rt.audit.size()
    for path in installation.settings.audit_dir.iterdir():
        assert CANARY.encode() not in path.read_bytes(), path.name
