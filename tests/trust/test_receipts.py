"""Receipts verify offline, with our verifier and with an independent JOSE library, and forgeries fail."""

from __future__ import annotations

import base64
import json
import re
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc import jws as joserfc_jws
from joserfc.jwk import KeySet

from gateway.domain.canonical_json import canonical
from gateway.domain.trail import CHECKPOINT_TYPE, RECEIPT_TYPE, PrivacySpent, ResultDocument, digest
from gateway.errors import SignatureInvalid
from gateway.services.audit_trail import make_checkpoint
from gateway.services.receipts import sign_result, verify_checkpoint, verify_receipt
from gateway.signing import KeyRing, public_jwk, thumbprint
from gateway.state.audit_sqlite import SqliteAuditLog
from tests.trust.conftest import event


def document(**over: Any) -> ResultDocument:
    values: dict[str, Any] = {
        "iss": "veilgate",
        "iat": int(time.time()),
        "request_id": "0f" * 16,
        "consumer": "demo-business",
        "service": "enterprise-active",
        "dataset": "enterprise_registry",
        "dataset_version": "a" * 32,
        "policy_version": None,
        "request_digest": digest({"claims": [{"credit_code": "91330106MA2B3C4D5X"}]}),
        "result": {"answers": [{"claim": 0, "result": "match", "fields": {"status": True}}], "score": 0.1},
        "privacy_spent": None,
        "audit_seq": 17,
        **over,
    }
    return ResultDocument.model_validate(values)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _parts(token: str) -> tuple[dict[str, Any], bytes, str]:
    header, payload, signature = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return json.loads(base64.urlsafe_b64decode(pad(header))), base64.urlsafe_b64decode(pad(payload)), signature


def test_a_receipt_verifies_and_gives_back_the_document(receipt_keys: KeyRing) -> None:
    signed = document(privacy_spent=PrivacySpent(epsilon=Decimal("0.5")))
    token = sign_result(receipt_keys, signed)
    assert verify_receipt(token, receipt_keys.jwks()) == signed
    header, payload, _ = _parts(token)
    assert header == {"alg": "EdDSA", "kid": receipt_keys.active.kid, "typ": RECEIPT_TYPE}
    assert payload == canonical(signed.model_dump(mode="json"))  # RFC 8785 bytes, exactly


def test_receipts_are_the_bytes_pyjwt_writes(receipt_keys: KeyRing, tmp_path: Path) -> None:
    """The JWS is assembled by hand on the request path; Ed25519 is deterministic, so PyJWT
    signing the same payload with the same key must give the very same token."""
    kid = receipt_keys.active.kid
    key = serialization.load_pem_private_key((tmp_path / "keys" / "receipt" / f"{kid}.pem").read_bytes(), None)
    for signed in (document(), document(result={"answers": [], "note": "é ü 中"}, iat=1)):
        payload = canonical(signed.model_dump(mode="json"))
        expected = pyjwt.api_jws.encode(payload, key, algorithm="EdDSA", headers={"kid": kid, "typ": RECEIPT_TYPE})
        assert sign_result(receipt_keys, signed) == expected
    receipt_keys.rotate()  # a new key gets its own header, not the cached one of the old key
    assert _parts(sign_result(receipt_keys, document()))[0]["kid"] == receipt_keys.active.kid != kid


# RFC 9864 deprecates the polymorphic name EdDSA in favour of Ed25519; our format and PyJWT
# still use EdDSA, so joserfc's warning about the name is expected here (see docs/receipts.md).
@pytest.mark.filterwarnings("ignore:EdDSA is deprecated via RFC 9864")
def test_an_independent_jose_library_verifies_the_receipt(receipt_keys: KeyRing) -> None:
    signed = document()
    token = sign_result(receipt_keys, signed)
    published = json.loads(json.dumps(receipt_keys.jwks()))  # as fetched from /.well-known/jwks.json
    verified = joserfc_jws.deserialize_compact(token, KeySet.import_key_set(published), algorithms=["EdDSA"])
    assert verified.headers()["kid"] == receipt_keys.active.kid
    assert json.loads(verified.payload) == signed.model_dump(mode="json")


def test_a_tampered_payload_fails(receipt_keys: KeyRing) -> None:
    header, payload, signature = sign_result(receipt_keys, document()).split(".")
    changed = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    changed["result"]["answers"][0]["result"] = "no_match"
    forged = ".".join([header, _b64(canonical(changed)), signature])
    with pytest.raises(SignatureInvalid, match="signature does not verify"):
        verify_receipt(forged, receipt_keys.jwks())


def test_a_tampered_signature_fails(receipt_keys: KeyRing) -> None:
    header, payload, signature = sign_result(receipt_keys, document()).split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    raw[5] ^= 0x01
    with pytest.raises(SignatureInvalid, match="signature does not verify"):
        verify_receipt(".".join([header, payload, _b64(bytes(raw))]), receipt_keys.jwks())


def test_a_receipt_re_signed_by_another_key_fails(receipt_keys: KeyRing, tmp_path: Path) -> None:
    other = KeyRing.create(tmp_path / "attacker")
    with pytest.raises(SignatureInvalid, match="does not publish"):
        verify_receipt(sign_result(other, document()), receipt_keys.jwks())


def test_a_foreign_key_wearing_a_published_kid_fails(receipt_keys: KeyRing) -> None:
    attacker = Ed25519PrivateKey.generate()
    payload = document().encode()
    headers = {"kid": receipt_keys.active.kid, "typ": RECEIPT_TYPE}
    forged = pyjwt.api_jws.encode(payload, attacker, algorithm="EdDSA", headers=headers)
    with pytest.raises(SignatureInvalid, match="signature does not verify"):
        verify_receipt(forged, receipt_keys.jwks())
    # ... and a JWKS entry relabelled with the attacker's key is refused by its thumbprint.
    jwks = receipt_keys.jwks()
    jwks["keys"][0] = {**jwks["keys"][0], **public_jwk(attacker.public_key())}
    with pytest.raises(SignatureInvalid, match="matching thumbprint"):
        verify_receipt(forged, jwks)


@pytest.mark.parametrize("alg", ["none", "HS256", "ES256", "RS256", "EdDSA "])
def test_a_swapped_algorithm_fails_before_any_key_is_used(receipt_keys: KeyRing, alg: str) -> None:
    _header, payload, signature = sign_result(receipt_keys, document()).split(".")
    swapped = _b64(json.dumps({"alg": alg, "kid": receipt_keys.active.kid, "typ": RECEIPT_TYPE}).encode())
    for candidate in (f"{swapped}.{payload}.{signature}", f"{swapped}.{payload}."):
        with pytest.raises(SignatureInvalid, match="algorithm is not EdDSA"):
            verify_receipt(candidate, receipt_keys.jwks())


def test_hmac_keyed_with_the_public_key_fails(receipt_keys: KeyRing) -> None:
    x = receipt_keys.jwks()["keys"][0]["x"]
    forged = pyjwt.api_jws.encode(
        document().encode(), x.encode() * 2, algorithm="HS256", headers={"kid": receipt_keys.active.kid}
    )
    with pytest.raises(SignatureInvalid, match="algorithm is not EdDSA"):
        verify_receipt(forged, receipt_keys.jwks())


def test_a_checkpoint_never_passes_for_a_receipt_nor_the_reverse(receipt_keys: KeyRing, tmp_path: Path) -> None:
    log = SqliteAuditLog.open(tmp_path / "audit")
    log.append_now(event())
    checkpoint = make_checkpoint(log, receipt_keys, issuer="veilgate")
    log.close()
    assert checkpoint is not None
    with pytest.raises(SignatureInvalid, match=re.escape(f"not of type {RECEIPT_TYPE}")):
        verify_receipt(checkpoint.jws, receipt_keys.jwks())
    with pytest.raises(SignatureInvalid, match=re.escape(f"not of type {CHECKPOINT_TYPE}")):
        verify_checkpoint(sign_result(receipt_keys, document()), receipt_keys.jwks())
    assert verify_checkpoint(checkpoint.jws, receipt_keys.jwks()).size == 1


def test_a_signed_payload_of_the_wrong_shape_fails(receipt_keys: KeyRing) -> None:
    body = document().model_dump(mode="json")
    del body["audit_seq"]
    token = receipt_keys.sign_document(canonical(body), typ=RECEIPT_TYPE)
    with pytest.raises(SignatureInvalid, match=r"not a result document \(audit_seq\)"):
        verify_receipt(token, receipt_keys.jwks())
    extra = receipt_keys.sign_document(
        canonical({**document().model_dump(mode="json"), "admin": True}), typ=RECEIPT_TYPE
    )
    with pytest.raises(SignatureInvalid, match="not a result document"):
        verify_receipt(extra, receipt_keys.jwks())


@pytest.mark.parametrize("junk", ["", "a.b", "a.b.c", "...", "x" * 5000, "eyJhbGciOiJFZERTQSJ9.e30."])
def test_junk_is_refused_cleanly(receipt_keys: KeyRing, junk: str) -> None:
    with pytest.raises(SignatureInvalid):
        verify_receipt(junk, receipt_keys.jwks())


def test_receipts_made_before_a_rotation_still_verify(receipt_keys: KeyRing) -> None:
    before = sign_result(receipt_keys, document())
    old_kid = receipt_keys.active.kid
    receipt_keys.rotate()
    after = sign_result(receipt_keys, document())
    jwks = receipt_keys.jwks()
    assert {k["kid"]: k["status"] for k in jwks["keys"]}[old_kid] == "retired"
    assert verify_receipt(before, jwks).request_id == verify_receipt(after, jwks).request_id
    assert _parts(after)[0]["kid"] != old_kid


def test_a_revoked_key_signs_nothing_from_its_revocation_time_on(receipt_keys: KeyRing) -> None:
    now = datetime.now(UTC)
    old = sign_result(receipt_keys, document(iat=int((now - timedelta(days=2)).timestamp())))
    recent = sign_result(receipt_keys, document(iat=int(now.timestamp())))
    compromised = receipt_keys.active.kid
    receipt_keys.rotate()
    receipt_keys.revoke(compromised, since=now - timedelta(days=1))
    jwks = receipt_keys.jwks()
    with pytest.raises(SignatureInvalid, match="revoked"):
        verify_receipt(recent, jwks)
    assert verify_receipt(old, jwks).iat < (now - timedelta(days=1)).timestamp()


def test_the_kid_is_the_thumbprint_of_the_published_key(receipt_keys: KeyRing) -> None:
    (jwk,) = receipt_keys.jwks()["keys"]
    raw = base64.urlsafe_b64decode(jwk["x"] + "=")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    assert thumbprint(Ed25519PublicKey.from_public_bytes(raw)) == jwk["kid"]


def test_a_key_listed_twice_is_refused_whichever_copy_comes_first(receipt_keys: KeyRing) -> None:
    """One copy revoked, one as it was: each verifier would pick its own copy."""
    now = datetime.now(UTC)
    receipt = sign_result(receipt_keys, document(iat=int(now.timestamp())))
    compromised = receipt_keys.active.kid
    receipt_keys.rotate()
    receipt_keys.revoke(compromised, since=now - timedelta(days=1))
    jwks = receipt_keys.jwks()
    revoked = next(k for k in jwks["keys"] if k["kid"] == compromised)
    innocent = {k: v for k, v in revoked.items() if k not in {"status", "revoked_since"}}
    for keys in ([innocent, *jwks["keys"]], [*jwks["keys"], innocent]):
        with pytest.raises(SignatureInvalid, match="more than once"):
            verify_receipt(receipt, {"keys": keys})
    with pytest.raises(Exception, match="never moved"):
        receipt_keys.revoke(compromised, since=now + timedelta(days=3650))  # un-revoking by a later time


def test_a_retired_key_signs_nothing_after_its_retirement(receipt_keys: KeyRing) -> None:
    """An old key found in a backup cannot date a forged document after it was retired."""
    retired = receipt_keys.active.kid
    receipt_keys.rotate()
    jwks = receipt_keys.jwks()
    at = datetime.fromisoformat(next(k for k in jwks["keys"] if k["kid"] == retired)["retired_at"]).timestamp()
    stolen = receipt_keys._private[retired]  # the test plays the key's thief

    def forged(iat: int) -> str:
        headers = {"kid": retired, "typ": RECEIPT_TYPE}
        return pyjwt.api_jws.encode(document(iat=iat).encode(), stolen, algorithm="EdDSA", headers=headers)

    assert verify_receipt(forged(int(at) - 60), jwks).iat == int(at) - 60  # signed while it was active
    with pytest.raises(SignatureInvalid, match="retired before"):
        verify_receipt(forged(int(at) + 3600), jwks)
