"""A canary planted in raw data never appears in anything the gateway emits."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from tests.conftest import CANARY, Installation, bearer, get_token


def test_canary_is_in_the_raw_data(session_installation: Installation) -> None:
    assert CANARY.encode() in (session_installation.source / "enterprise_registry.parquet").read_bytes()


def test_canary_never_leaves(
    shared_client: TestClient, session_installation: Installation, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    creds = session_installation.credentials
    tokens = {who: get_token(shared_client, who, secret) for who, secret in creds.items()}
    requests: list[tuple[str, str, dict[str, str]]] = [
        ("GET", "/v1/catalog", {}),
        ("GET", "/openapi.json", {}),
        ("GET", "/healthz", {}),
        ("GET", "/readyz", {}),
        ("GET", "/v1/me", {}),
        ("GET", "/v1/catalog/no_such_dataset", {}),
        ("GET", "/v1/catalog/nothing/sample", {}),
        ("DELETE", "/v1/catalog", {}),
        ("GET", "/.well-known/jwks.json", {}),
        ("GET", "/v1/audit/checkpoints", {}),
        ("GET", "/v1/audit/proof/inclusion?leaf=0&size=1", {}),
        ("GET", "/v1/audit/proof/consistency?first=1&second=2", {}),
        ("GET", "/v1/audit/leaves/0", {}),
        ("GET", "/v1/admin/audit?limit=1000", {}),
    ]
    for dataset in ("enterprise_registry", "social_insurance", "tax_compliance"):
        requests += [
            ("GET", f"/v1/catalog/{dataset}", {}),
            ("GET", f"/v1/catalog/{dataset}/sample?rows=200", {}),
            ("GET", f"/v1/catalog/{dataset}/sample?rows=0", {}),
        ]
    emitted: list[str] = []
    for method, path, headers in requests:
        for token in (None, *tokens.values()):
            response = shared_client.request(method, path, headers={**headers, **(bearer(token) if token else {})})
            emitted.append(response.text)
            emitted.extend(f"{k}: {v}" for k, v in response.headers.items())
    for token in tokens.values():
        response = shared_client.get("/v1/admin/datasets", headers=bearer(token))
        emitted.append(response.text)
    emitted.append(caplog.text)
    for stored in session_installation.settings.audit_dir.iterdir():  # the audit log itself
        emitted.append(stored.read_bytes().decode("utf-8", errors="replace"))
    assert [text for text in emitted if CANARY in text] == []
