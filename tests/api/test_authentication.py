"""Client credentials and access tokens, attacked: every rejection the issue lists."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from fastapi.testclient import TestClient

from gateway.domain.principal import Role
from gateway.errors import RateLimited
from gateway.services.authentication import mint_token
from gateway.services.token_throttle import Rate, TokenThrottle
from gateway.signing import KeyRing
from gateway.state.accounts import AccountRules
from tests.conftest import Installation, bearer, get_token


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(inst: Installation, **over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": inst.settings.issuer,
        "aud": inst.settings.audience,
        "sub": "demo-admin",
        "org": "x",
        "roles": ["admin"],
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": "t1",
    }
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(inst: Installation, claims: dict[str, Any], ring: KeyRing | None = None) -> str:
    keys = ring or KeyRing.load(inst.settings.token_keys_dir)
    return keys.sign_jwt(claims)


def _me(client: TestClient, token: str) -> Any:
    return client.get("/v1/me", headers=bearer(token))


def _assert_unauthenticated(response: Any, fragment: str) -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["type"].endswith("/unauthenticated")
    assert fragment in body["detail"]
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_client_credentials_give_a_working_token(shared_client: TestClient, session_installation: Installation) -> None:
    token = get_token(shared_client, "demo-researcher", session_installation.credentials["demo-researcher"])
    body = _me(shared_client, token).json()
    assert body == {
        "client_id": "demo-researcher",
        "organisation": "Demo University Institute of Labour Economics",
        "roles": ["researcher"],
    }
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["alg"] == "EdDSA" and header["kid"]
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "==="))
    assert {"iss", "aud", "sub", "roles", "iat", "exp", "jti"} <= payload.keys()
    assert payload["exp"] - payload["iat"] == session_installation.settings.token_ttl_seconds


@pytest.mark.parametrize(
    ("form", "status"),
    [
        ({"grant_type": "client_credentials", "client_id": "demo-admin", "client_secret": "wrong"}, 401),
        ({"grant_type": "client_credentials", "client_id": "nobody", "client_secret": "wrong"}, 401),
        ({"grant_type": "password", "client_id": "demo-admin", "client_secret": "x"}, 422),
        ({"grant_type": "client_credentials", "client_id": "demo-admin"}, 422),
    ],
    ids=["wrong-secret", "unknown-client", "wrong-grant", "missing-secret"],
)
def test_bad_credentials_get_no_token(shared_client: TestClient, form: dict[str, str], status: int) -> None:
    response = shared_client.post("/v1/token", data=form)
    assert response.status_code == status
    assert "access_token" not in response.text
    assert response.headers["content-type"] == "application/problem+json"


def test_secrets_are_stored_hashed(session_installation: Installation) -> None:
    files = sorted(session_installation.settings.state_dir.glob("accounts.sqlite3*"))  # with its WAL
    stored = b"".join(path.read_bytes() for path in files)
    for secret in session_installation.credentials.values():
        assert secret.encode() not in stored
    assert files and all(path.stat().st_mode & 0o077 == 0 for path in files)


def test_missing_or_malformed_authorization_is_refused(shared_client: TestClient) -> None:
    _assert_unauthenticated(shared_client.get("/v1/me"), "Authorization: Bearer")
    _assert_unauthenticated(shared_client.get("/v1/me", headers={"Authorization": "Basic abc"}), "Bearer")
    _assert_unauthenticated(_me(shared_client, "not-a-jwt"), "malformed")


def test_alg_none_is_refused(shared_client: TestClient, session_installation: Installation) -> None:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(_claims(session_installation)).encode())
    _assert_unauthenticated(_me(shared_client, f"{header}.{payload}."), "algorithm is not accepted")


def test_hmac_signed_with_the_public_key_is_refused(
    shared_client: TestClient, session_installation: Installation
) -> None:
    """The classic algorithm-confusion attack: HS256 keyed with the server's public key."""
    ring = KeyRing.load(session_installation.settings.token_keys_dir)
    jwk = ring.jwks()["keys"][0]
    public_pem = (
        serialization.load_pem_private_key(
            (session_installation.settings.token_keys_dir / f"{ring.active.kid}.pem").read_bytes(), None
        )
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for secret in (public_pem, jwk["x"].encode()):
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": ring.active.kid}).encode())
        payload = _b64(json.dumps(_claims(session_installation)).encode())
        signature = _b64(hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        _assert_unauthenticated(_me(shared_client, f"{header}.{payload}.{signature}"), "algorithm is not accepted")


def test_unknown_key_is_refused(shared_client: TestClient, session_installation: Installation, tmp_path: Any) -> None:
    stranger = KeyRing.create(tmp_path / "stranger")
    _assert_unauthenticated(
        _me(shared_client, _sign(session_installation, _claims(session_installation), stranger)), "unknown key"
    )


def test_receipt_key_cannot_sign_access_tokens(shared_client: TestClient, session_installation: Installation) -> None:
    receipt_ring = KeyRing.load(session_installation.settings.receipt_keys_dir)
    token = _sign(session_installation, _claims(session_installation), receipt_ring)
    _assert_unauthenticated(_me(shared_client, token), "unknown key")


def test_tampered_payload_is_refused(shared_client: TestClient, session_installation: Installation) -> None:
    token = _sign(session_installation, _claims(session_installation, roles=["consumer"], sub="demo-business"))
    header, _payload, signature = token.split(".")
    forged = _b64(json.dumps(_claims(session_installation)).encode())
    _assert_unauthenticated(_me(shared_client, f"{header}.{forged}.{signature}"), "signature does not verify")


def test_tampered_signature_is_refused(shared_client: TestClient, session_installation: Installation) -> None:
    token = _sign(session_installation, _claims(session_installation))
    head, payload, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    _assert_unauthenticated(_me(shared_client, f"{head}.{payload}.{flipped}"), "signature does not verify")


@pytest.mark.parametrize(
    ("over", "fragment"),
    [
        ({"exp": int(time.time()) - 60}, "expired"),
        ({"nbf": int(time.time()) + 600}, "not valid yet"),
        ({"iat": int(time.time()) + 600}, "not valid yet"),
        ({"aud": "someone-else"}, "another audience"),
        ({"iss": "https://evil.example"}, "another issuer"),
    ],
    ids=["expired", "not-yet-valid", "issued-in-future", "wrong-aud", "wrong-iss"],
)
def test_time_audience_and_issuer_are_enforced(
    shared_client: TestClient, session_installation: Installation, over: dict[str, Any], fragment: str
) -> None:
    _assert_unauthenticated(
        _me(shared_client, _sign(session_installation, _claims(session_installation, **over))), fragment
    )


@pytest.mark.parametrize("claim", ["iss", "aud", "sub", "iat", "exp", "jti", "roles"])
def test_each_required_claim_is_required(
    shared_client: TestClient, session_installation: Installation, claim: str
) -> None:
    claims = _claims(session_installation)
    del claims[claim]
    response = _me(shared_client, _sign(session_installation, claims))
    assert response.status_code == 401
    assert response.json()["type"].endswith("/unauthenticated")


def test_token_cannot_grant_roles_the_account_lacks(
    shared_client: TestClient, session_installation: Installation
) -> None:
    ring = KeyRing.load(session_installation.settings.token_keys_dir)
    token = mint_token(
        ring,
        "demo-business",
        "x",
        frozenset({Role.ADMIN, Role.CONSUMER}),
        issuer=session_installation.settings.issuer,
        audience=session_installation.settings.audience,
        ttl_seconds=300,
    )
    assert _me(shared_client, token).json()["roles"] == ["consumer"]
    denied = shared_client.get("/v1/admin/datasets", headers=bearer(token))
    assert denied.status_code == 403
    assert denied.json()["type"].endswith("/policy-denied")


def test_unknown_role_claim_is_refused(shared_client: TestClient, session_installation: Installation) -> None:
    token = _sign(session_installation, _claims(session_installation, roles=["root"]))
    _assert_unauthenticated(_me(shared_client, token), "unknown role")


def test_disabling_a_client_stops_its_tokens_at_once(installation: Installation, make_client: Any) -> None:
    client = make_client(installation.settings)
    admin = get_token(client, "demo-admin", installation.credentials["demo-admin"])
    business = get_token(client, "demo-business", installation.credentials["demo-business"])
    assert _me(client, business).status_code == 200
    assert client.delete("/v1/admin/consumers/demo-business", headers=bearer(admin)).status_code == 204
    _assert_unauthenticated(_me(client, business), "disabled")
    refused = client.post(
        "/v1/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "demo-business",
            "client_secret": installation.credentials["demo-business"],
        },
    )
    assert refused.status_code == 401


def test_admin_creates_a_consumer_whose_secret_works_once_shown(installation: Installation, make_client: Any) -> None:
    client = make_client(installation.settings)
    admin = get_token(client, "demo-admin", installation.credentials["demo-admin"])
    created = client.post(
        "/v1/admin/consumers",
        headers=bearer(admin),
        json={"client_id": "bank-7", "organisation": "Bank Seven", "roles": ["consumer"]},
    )
    assert created.status_code == 201, created.text
    secret = created.json()["client_secret"]
    stored = b"".join(path.read_bytes() for path in installation.settings.state_dir.glob("accounts.sqlite3*"))
    assert stored and secret.encode() not in stored
    assert _me(client, get_token(client, "bank-7", secret)).json()["organisation"] == "Bank Seven"
    again = client.post(
        "/v1/admin/consumers",
        headers=bearer(admin),
        json={"client_id": "bank-7", "organisation": "Bank Seven", "roles": ["consumer"]},
    )
    assert again.status_code == 409
    researcher = get_token(client, "demo-researcher", installation.credentials["demo-researcher"])
    forbidden = client.post(
        "/v1/admin/consumers",
        headers=bearer(researcher),
        json={"client_id": "mine", "organisation": "Me", "roles": ["admin"]},
    )
    assert forbidden.status_code == 403


def test_revoked_token_key_is_refused(installation: Installation, make_client: Any) -> None:
    ring = KeyRing.load(installation.settings.token_keys_dir)
    old_token = _sign(installation, _claims(installation))
    old_kid = ring.active.kid
    client = make_client(installation.settings)
    ring.rotate()
    assert _me(client, old_token).status_code == 200  # retired keys still verify
    # Revocation by another process (the CLI) takes effect in the running server, on its first
    # request after the recheck interval.
    KeyRing.load(installation.settings.token_keys_dir).revoke(old_kid, datetime.now(UTC) - timedelta(hours=1))
    time.sleep(installation.settings.state_recheck_seconds)
    _assert_unauthenticated(_me(client, old_token), "revoked")


def test_key_files_readable_by_others_are_refused(installation: Installation) -> None:
    ring = KeyRing.load(installation.settings.token_keys_dir)
    pem = installation.settings.token_keys_dir / f"{ring.active.kid}.pem"
    pem.chmod(0o644)
    from gateway.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="readable by others"):
        KeyRing.load(installation.settings.token_keys_dir)


def _token_form(client_id: str, given: str | None = None) -> dict[str, str]:
    return {"grant_type": "client_credentials", "client_id": client_id, "client_secret": given or "wrong"}


def test_token_requests_are_limited_before_the_secret_is_hashed(
    installation: Installation, make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = installation.settings.model_copy(
        update={"token_attempts_per_client": 3, "token_attempts_per_address": 5, "token_attempts_overall": 1000}
    )
    client: TestClient = make_client(settings)
    hashed: list[str] = []
    checker = AccountRules.check_credentials

    def counting(self: AccountRules, client_id: str, secret: str) -> Any:
        hashed.append(client_id)
        return checker(self, client_id, secret)

    monkeypatch.setattr(AccountRules, "check_credentials", counting)
    secret = installation.credentials["demo-admin"]
    # Per client id: three tries of one id, right secret or wrong; the fourth is refused unhashed.
    statuses = [client.post("/v1/token", data=_token_form("demo-admin", s)).status_code for s in ("x", "y", secret)]
    assert statuses == [401, 401, 200]
    refused = client.post("/v1/token", data=_token_form("demo-admin", secret))
    assert refused.status_code == 429 and hashed == ["demo-admin"] * 3
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"].endswith("/rate-limited") and int(refused.headers["retry-after"]) >= 1
    assert "demo-admin" not in refused.text and "testclient" not in refused.text
    # Per source address: two more ids from the same address, then every id is refused unhashed.
    for other in ("guess-1", "guess-2"):
        assert client.post("/v1/token", data=_token_form(other)).status_code == 401
    for other in ("guess-3", "demo-business"):
        assert client.post("/v1/token", data=_token_form(other)).status_code == 429
    assert hashed == ["demo-admin"] * 3 + ["guess-1", "guess-2"]


def test_the_token_throttle_refills_and_counts_only_what_it_admits() -> None:
    now = [0.0]
    throttle = TokenThrottle(per_client=Rate(2), per_address=Rate(60), overall=Rate(600), clock=lambda: now[0])
    throttle.admit("a", "10.0.0.1")
    throttle.admit("a", "10.0.0.1")
    with pytest.raises(RateLimited) as refused:
        throttle.admit("a", "10.0.0.1")
    assert refused.value.headers["Retry-After"] == "30"  # 2 a minute: one more in 30 s
    for _ in range(5):  # refusals of `a` did not use up the address's allowance
        with pytest.raises(RateLimited):
            throttle.admit("a", "10.0.0.1")
    for index in range(58):
        throttle.admit(f"b{index}", "10.0.0.1")
    with pytest.raises(RateLimited, match="address limit"):
        throttle.admit("c", "10.0.0.1")
    throttle.admit("c", "10.0.0.2")  # another address is not affected
    now[0] = 30.0
    throttle.admit("a", "10.0.0.3")  # refilled
    with pytest.raises(RateLimited, match="client_id limit"):
        throttle.admit("a", "10.0.0.3")
