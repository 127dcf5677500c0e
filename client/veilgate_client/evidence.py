"""Offline checks of what a gateway signs, re-implemented from docs/receipts.md.

Nothing here trusts the gateway beyond its published Ed25519 keys: a compact JWS is checked for
exactly `alg: EdDSA` and the expected `typ` before any key is used, the key must be published
under a `kid` equal to its RFC 7638 thumbprint, and a key revoked since T signs nothing from T
on. The keys are pinned on first use (`KeyPin`) and later accepted only as the server's rotation
rules allow: keys are added, retired or revoked, never removed, replaced or un-revoked.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from veilgate_client.errors import KeysChanged, NotIncluded, ReceiptInvalid

RECEIPT_TYPE = "veilgate-receipt+json"
CHECKPOINT_TYPE = "veilgate-checkpoint+json"
_RANK = {"active": 0, "retired": 1, "revoked": 2}
_DOCUMENT_FIELDS = {"iss": str, "iat": int, "request_id": str, "consumer": str, "service": str,
                    "request_digest": str, "audit_seq": int}  # fmt: skip


_B64URL = re.compile(r"[A-Za-z0-9_-]*")
RETIRED_GRACE_SECONDS = 600
"""How long after its retirement a key's signatures are still taken (as the gateway's verifier)."""


def b64url_decode(text: str) -> bytes:
    """Base64url as JWS writes it: no padding, no other character, no stray bits in the last one.
    ValueError otherwise: a lenient reading accepts strings every other verifier refuses."""
    if not _B64URL.fullmatch(text):
        raise ValueError("not base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii") != text:
        raise ValueError("not the canonical base64url of its bytes")
    return data


def key_of(jwks: Mapping[str, Any], kid: Any) -> dict[str, Any] | None:
    """The one entry of `kid`; ReceiptInvalid if it is listed more than once (one copy revoked,
    one not: each reader would pick its own)."""
    listed = [k for k in jwks.get("keys", []) if isinstance(k, dict) and k.get("kid") == kid]
    if len(listed) > 1:
        raise ReceiptInvalid(f"the JWKS lists key {kid} more than once")
    return listed[0] if listed else None


def canonical(value: Any) -> bytes:
    """RFC 8785 canonical JSON: the bytes the gateway hashes and signs."""
    return bytes(rfc8785.dumps(value))


def sha256_digest(value: Any) -> str:
    return "sha256:" + hashlib.sha256(canonical(value)).hexdigest()


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 thumbprint of an OKP key: its required members, sorted, without spaces."""
    members = {"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"]}
    digest = hashlib.sha256(json.dumps(members, sort_keys=True, separators=(",", ":")).encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _public_key(jwk: Mapping[str, Any], kid: str) -> Ed25519PublicKey:
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or not isinstance(jwk.get("x"), str):
        raise ReceiptInvalid(f"key {kid} is not an Ed25519 key")
    if jwk.get("alg", "EdDSA") != "EdDSA" or thumbprint(jwk) != kid:
        raise ReceiptInvalid(f"key {kid} is not published under its own thumbprint")
    try:
        return Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"]))
    except ValueError:
        raise ReceiptInvalid(f"key {kid} is not a valid Ed25519 key") from None


def jws_header(token: str) -> dict[str, Any]:
    try:
        header = json.loads(b64url_decode(token.split(".", maxsplit=1)[0]))
    except (ValueError, IndexError, RecursionError):
        raise ReceiptInvalid("the JWS is malformed") from None
    if not isinstance(header, dict):
        raise ReceiptInvalid("the JWS header is not an object")
    return header


def verify_jws(token: str, jwks: Mapping[str, Any], typ: str, issued_at: Callable[[dict[str, Any]], float]) -> Any:
    """The payload of a compact JWS of type `typ`, signed by a key of `jwks` valid at `issued_at`."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise ReceiptInvalid("the JWS is not in compact form")
    header = jws_header(token)
    if header.get("alg") != "EdDSA":
        raise ReceiptInvalid("the JWS algorithm is not EdDSA")
    if header.get("typ") != typ:
        raise ReceiptInvalid(f"the JWS is not of type {typ}")
    kid = header.get("kid")
    jwk = key_of(jwks, kid)
    if not isinstance(kid, str) or jwk is None:
        raise ReceiptInvalid("the JWS is signed by a key that is not published")
    try:
        _public_key(jwk, kid).verify(b64url_decode(parts[2]), f"{parts[0]}.{parts[1]}".encode())
        payload = json.loads(b64url_decode(parts[1]))
    except (InvalidSignature, ValueError):
        raise ReceiptInvalid("the signature does not verify") from None
    if not isinstance(payload, dict):
        raise ReceiptInvalid("the JWS payload is not an object")
    if jwk.get("status") == "revoked" and issued_at(payload) >= _revoked_since(jwk):
        raise ReceiptInvalid(f"key {kid} was revoked before this was issued")
    retired = _time(jwk.get("retired_at"))  # a retirement without a readable time trusts nothing after it
    if jwk.get("status") == "retired" and (retired is None or issued_at(payload) > retired + RETIRED_GRACE_SECONDS):
        raise ReceiptInvalid(f"key {kid} was retired before this was issued")
    return payload


def _in_the_past(text: Any) -> bool:
    """A readable time no later than now (with the grace of clocks that differ)."""
    found = _time(text)
    return found is not None and found <= time.time() + RETIRED_GRACE_SECONDS


def _time(text: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _revoked_since(jwk: Mapping[str, Any]) -> float:
    """When a revoked key stopped being trusted; a revocation without a readable time trusts nothing."""
    since = _time(jwk.get("revoked_since"))
    return float("-inf") if since is None else since


def verify_receipt(token: str, jwks: Mapping[str, Any]) -> dict[str, Any]:
    """The result document a receipt signs, after the checks above and a check of its shape."""

    def issued(doc: dict[str, Any]) -> float:
        return float(doc["iat"]) if isinstance(doc.get("iat"), int) else float("inf")

    document: dict[str, Any] = verify_jws(token, jwks, RECEIPT_TYPE, issued)
    for name, kind in _DOCUMENT_FIELDS.items():
        if not isinstance(document.get(name), kind) or isinstance(document.get(name), bool):
            raise ReceiptInvalid(f"the receipt's payload is not a result document ({name})")
    if "result" not in document:
        raise ReceiptInvalid("the receipt's payload is not a result document (result)")
    return document


def verify_checkpoint(token: str, jwks: Mapping[str, Any]) -> dict[str, Any]:
    """The signed tree head `{iss, size, root, time}` of a checkpoint."""

    def issued(head: dict[str, Any]) -> float:  # an unreadable time counts as after any revocation
        try:
            return datetime.fromisoformat(str(head.get("time", "")).replace("Z", "+00:00")).timestamp()
        except ValueError:
            return float("inf")

    head: dict[str, Any] = verify_jws(token, jwks, CHECKPOINT_TYPE, issued)
    if not isinstance(head.get("size"), int) or not isinstance(head.get("root"), str):
        raise ReceiptInvalid("the checkpoint's payload is not a tree head")
    return head


def leaf_hash(leaf: Mapping[str, Any]) -> bytes:
    return hashlib.sha256(b"\x00" + canonical(dict(leaf))).digest()


def root_from_inclusion(leaf: bytes, index: int, size: int, path: list[bytes]) -> bytes:
    """RFC 9162, 2.1.3.2: the root that an audit path leads to from leaf `index` of `size`."""
    if not 0 <= index < size:
        raise NotIncluded(f"leaf {index} is beyond a tree of {size} leaves")
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise NotIncluded("the audit path is too long")
        if fn & 1 or fn == sn:
            r = hashlib.sha256(b"\x01" + p + r).digest()
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = hashlib.sha256(b"\x01" + r + p).digest()
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise NotIncluded("the audit path is too short")
    return r


@dataclass
class KeyPin:
    """The gateway's JWKS as first seen, kept in `path` (or in memory), changed only by rotation rules.

    `fetch` gets the published JWKS. `max_age` seconds after the last check the keys are fetched
    again (to learn of revocations); so are they when a receipt names an unknown key.
    """

    fetch: Callable[[], dict[str, Any]]
    path: Path | None = None
    max_age: float = 3600.0
    _jwks: dict[str, Any] | None = None
    _checked: float = 0.0

    def keys(self, kid: str | None = None) -> dict[str, Any]:
        """The pinned JWKS, refreshed if it is stale or does not hold `kid`."""
        if self._jwks is None and self.path is not None and self.path.is_file():
            try:
                self._jwks = json.loads(self.path.read_text())
            except ValueError:
                raise KeysChanged(f"the pinned keys in {self.path} are unreadable; restore the file") from None
        stale = time.monotonic() - self._checked > self.max_age
        if self._jwks is None or stale or (kid is not None and kid not in self.kids()):
            self.refresh()
        return self._jwks if self._jwks is not None else self.refresh()

    def kids(self) -> set[str]:
        return {str(k.get("kid")) for k in (self._jwks or {}).get("keys", [])}

    def refresh(self) -> dict[str, Any]:
        """Fetch the JWKS and pin it if it only extends the pinned one (KeysChanged otherwise)."""
        new = self.fetch()
        if not isinstance(new, dict) or not isinstance(new.get("keys"), list):
            raise KeysChanged("the gateway's JWKS has no `keys` list")
        for jwk in new["keys"]:
            if not isinstance(jwk, dict):
                raise KeysChanged("the gateway's JWKS holds an entry that is not a key")
            _public_key(jwk, str(jwk.get("kid")))
        kids = [jwk.get("kid") for jwk in new["keys"]]
        if len(set(kids)) != len(kids):
            raise KeysChanged("the gateway's JWKS lists a key more than once")
        if self._jwks is not None:
            check_rotation(self._jwks, new)
        self._jwks, self._checked = new, time.monotonic()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(new, indent=2))
            os.replace(tmp, self.path)
        return new


def check_rotation(old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """Keys may be added, retired (with `retired_at`) or revoked (with `revoked_since`); a pinned key
    is never removed, never given other key material, never made active again, and its revocation
    time never moves."""
    kids = [k.get("kid") for k in new.get("keys", [])]
    if len(set(kids)) != len(kids):
        raise KeysChanged("the gateway's JWKS lists a key more than once")
    published = {k.get("kid"): k for k in new.get("keys", [])}
    pinned = {k.get("kid") for k in old.get("keys", [])}
    for added in (k for k in new.get("keys", []) if k.get("kid") not in pinned):
        if added.get("status") == "retired" and not _in_the_past(added.get("retired_at")):
            raise KeysChanged(f"key {added.get('kid')} is new and retired without a past retirement time")
    for before in old.get("keys", []):
        kid = before.get("kid")
        after = published.get(kid)
        if after is None:
            raise KeysChanged(f"pinned key {kid} is no longer published")
        if after.get("x") != before.get("x") or after.get("crv") != before.get("crv"):
            raise KeysChanged(f"pinned key {kid} now has other key material")
        was, now = before.get("status", "active"), after.get("status", "active")
        if _RANK.get(now, -1) < _RANK.get(was, 99):
            raise KeysChanged(f"pinned key {kid} went from {was} back to {now}")
        if was == "revoked" and after.get("revoked_since") != before.get("revoked_since"):
            raise KeysChanged(f"pinned key {kid} changed its revocation time")
        if was == "retired" and after.get("retired_at") != before.get("retired_at"):
            raise KeysChanged(f"pinned key {kid} changed its retirement time")
        if was == "active" and now == "retired" and not _in_the_past(after.get("retired_at")):
            raise KeysChanged(f"pinned key {kid} was retired without a past retirement time")
    if sum(1 for k in new.get("keys", []) if k.get("status", "active") == "active") > 1:
        raise KeysChanged("the gateway publishes more than one active key")
