"""Receipts: signing result documents, and checking them offline as any consumer would.

`verify_receipt(token, jwks)` is the public verifier: it needs the receipt and the published
JWKS, nothing of the gateway's state, so a consumer, a court or an auditor can run it anywhere.
"""

from __future__ import annotations

import base64
import json
import urllib.request
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from gateway.domain.trail import CHECKPOINT_TYPE, RECEIPT_TYPE, ResultDocument, TreeHead
from gateway.errors import InvalidRequest, SignatureInvalid
from gateway.signing import KeyRing, VerifiedDocument, verify_document

_FETCH_TIMEOUT_SECONDS = 10
_FETCH_MAX_BYTES = 8 * 1_048_576


def sign_receipt(keys: KeyRing, payload: bytes) -> str:
    """The receipt over a result document's canonical bytes."""
    return keys.sign_document(payload, typ=RECEIPT_TYPE)


def sign_result(keys: KeyRing, document: ResultDocument) -> str:
    return sign_receipt(keys, document.encode())


RETIRED_GRACE_SECONDS = 600
"""How long after its retirement a key's signatures are still taken: replicas pick up a rotation
within moments, and a document signed just before is dated just before."""


def _check_not_revoked(verified: VerifiedDocument, issued_at: float) -> None:
    """A key revoked since T signs nothing trustworthy from T on; what it signed before stands.
    A key retired at T signs nothing after T (plus a grace): an old key found in a backup would
    otherwise forge current documents until someone revoked it."""
    if verified.key_status == "revoked" and (
        verified.revoked_since is None or issued_at >= verified.revoked_since.timestamp()
    ):
        raise SignatureInvalid("the signing key was revoked before this was issued")
    retired = verified.retired_at
    if (
        verified.key_status == "retired"
        and retired is not None
        and issued_at > retired.timestamp() + RETIRED_GRACE_SECONDS
    ):
        raise SignatureInvalid("the signing key was retired before this was issued")


Signed = TypeVar("Signed", ResultDocument, TreeHead)


def _verified(token: str, jwks: Mapping[str, Any], typ: str, shape: type[Signed], names: tuple[str, str]) -> Signed:
    """Signature and key first (`verify_document`), then the payload's shape, then revocation.

    `names`: what the JWS is called, and what its payload should be, for the error message.
    """
    verified = verify_document(token.strip(), jwks, typ=typ)
    try:
        payload = shape.model_validate_json(verified.payload)
    except ValidationError as exc:
        where = ".".join(str(p) for p in exc.errors()[0]["loc"]) or "payload"
        raise SignatureInvalid(f"the {names[0]}'s payload is not a {names[1]} ({where})") from None
    issued = payload.iat if isinstance(payload, ResultDocument) else datetime.fromisoformat(payload.time).timestamp()
    _check_not_revoked(verified, issued)
    return payload


def verify_receipt(token: str, jwks: Mapping[str, Any]) -> ResultDocument:
    """The result document of a valid receipt; SignatureInvalid names the rule that failed."""
    return _verified(token, jwks, RECEIPT_TYPE, ResultDocument, ("receipt", "result document"))


def signed_payload(token: str) -> bytes:
    """The payload bytes of a compact JWS (only after it verified: this checks nothing)."""
    payload = token.strip().split(".")[1]
    return base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))


def verify_checkpoint(token: str, jwks: Mapping[str, Any]) -> TreeHead:
    """The tree head of a valid checkpoint (signed tree head)."""
    return _verified(token, jwks, CHECKPOINT_TYPE, TreeHead, ("checkpoint", "tree head"))


def fetch_json(url: str) -> Any:
    """GET a JSON document from a gateway (JWKS, checkpoints, proofs), size- and time-limited."""
    if not url.startswith(("https://", "http://")):
        raise InvalidRequest(f"{url} is not an http(s) URL")
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 - scheme checked
    with urllib.request.urlopen(request, timeout=_FETCH_TIMEOUT_SECONDS) as response:  # noqa: S310
        raw = response.read(_FETCH_MAX_BYTES + 1)
    return _parse_json(raw, url)


def _parse_json(raw: bytes, source: str) -> Any:
    if len(raw) > _FETCH_MAX_BYTES:
        raise InvalidRequest(f"{source} is larger than 8 MiB")
    try:
        return json.loads(raw)
    except ValueError:
        raise InvalidRequest(f"{source} is not JSON") from None


def load_jwks(source: str) -> dict[str, Any]:
    """A JWKS from a file path or an http(s) URL (for example /.well-known/jwks.json)."""
    if source.startswith(("https://", "http://")):
        jwks = fetch_json(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise InvalidRequest(f"no JWKS file at {source}")
        jwks = _parse_json(path.read_bytes(), source)
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise InvalidRequest("the JWKS has no `keys` list")
    return jwks
