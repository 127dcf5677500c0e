"""Ed25519 key rings and JWS/JWT signing and verification.

The only module that imports the JOSE library (PyJWT) and holds private keys. Imports no other
leaf. One key ring per purpose (access tokens, receipts), in its own directory, so a key that
signs tokens can never sign a receipt and the reverse.

SECURITY, how a token is checked, in order (fails closed at the first failed step):
1. the header parses, its `alg` is exactly EdDSA (so `none` and HMAC are refused before any key
   is touched) and it names a `kid`;
2. the `kid` is a key of this ring and not revoked;
3. the signature verifies under that key's public half;
4. `exp`, `nbf`/`iat`, `aud` and `iss` hold, and every required claim is present.
Errors say which rule failed, never the token or the key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.bindings import crypto_sign, crypto_sign_seed_keypair

from gateway.atomic_files import Recheck, check_secret_file, create_secret_file, stamp, write_atomic
from gateway.domain.canonical_json import canonical
from gateway.errors import ConfigurationError, SignatureInvalid, Unauthenticated

ALGORITHM = "EdDSA"
KeyStatus = Literal["active", "retired", "revoked"]
_RING_FILE = "keyring.json"
_VERIFIED_CACHE_SIZE = 4096


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_jwk(public_key: Ed25519PublicKey) -> dict[str, str]:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw)}


def thumbprint(public_key: Ed25519PublicKey) -> str:
    """RFC 7638 JWK thumbprint: the key id, derived from the key so it cannot be confused."""
    return _b64url(hashlib.sha256(canonical(public_jwk(public_key))).digest())


@dataclass(frozen=True, slots=True)
class KeyInfo:
    kid: str
    created_at: datetime
    status: KeyStatus
    retired_at: datetime | None = None
    revoked_since: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kid": self.kid,
            "created_at": self.created_at.isoformat(),
            "status": self.status,
            "retired_at": self.retired_at.isoformat() if self.retired_at else None,
            "revoked_since": self.revoked_since.isoformat() if self.revoked_since else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> KeyInfo:
        def when(value: object) -> datetime | None:
            return datetime.fromisoformat(str(value)) if value else None

        status = str(data["status"])
        if status not in ("active", "retired", "revoked"):
            raise ConfigurationError(f"key {data['kid']} has an unknown status")
        return cls(
            kid=str(data["kid"]),
            created_at=datetime.fromisoformat(str(data["created_at"])),
            status=status,  # type: ignore[arg-type]  # checked against the Literal just above
            retired_at=when(data.get("retired_at")),
            revoked_since=when(data.get("revoked_since")),
        )


class KeyRing:
    """The keys of one purpose: exactly one active signing key, retired and revoked ones kept."""

    def __init__(
        self,
        directory: Path,
        infos: list[KeyInfo],
        private: dict[str, Ed25519PrivateKey],
        *,
        recheck_seconds: float = 0.0,
    ) -> None:
        self._dir = directory
        self._infos = infos
        self._private = private
        self._public = {kid: key.public_key() for kid, key in private.items()}
        self._lock = threading.Lock()
        self._ring_file = str(directory / _RING_FILE)
        self._stamp = stamp(self._ring_file)
        self._recheck = Recheck(recheck_seconds)
        self._verified: dict[tuple[str, str, str, tuple[str, ...]], tuple[dict[str, Any], str]] = {}
        self._headers: dict[tuple[str, str], str] = {}
        self._sodium: dict[str, bytes] = {}
        """Per key id, the key as libsodium holds it: a kid is the key's thumbprint, so it names one key."""

    def refresh(self) -> None:
        """Pick up a rotation or revocation made by another process (`veilgate keys ...`): its
        file is looked at again at most once per recheck interval."""
        if not self._recheck.due() or stamp(self._ring_file) == self._stamp:
            return
        fresh = KeyRing.load(self._dir)
        with self._lock:
            self._infos, self._private, self._public = fresh._infos, fresh._private, fresh._public
            self._stamp = fresh._stamp

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def create(cls, directory: Path) -> KeyRing:
        """Create the directory and a first key, unless a ring is already there."""
        if (directory / _RING_FILE).exists():
            return cls.load(directory)
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        ring = cls(directory, [], {})
        ring.rotate()
        return ring

    @classmethod
    def load(cls, directory: Path, *, recheck_seconds: float = 0.0) -> KeyRing:
        """`recheck_seconds`: how long the ring may be used from memory before its file is
        looked at again for another process's rotation or revocation (0: on every use)."""
        ring_file = directory / _RING_FILE
        if not ring_file.is_file():
            raise ConfigurationError(f"no key ring in {directory}; run `veilgate keys init`")
        infos = [KeyInfo.from_json(item) for item in json.loads(ring_file.read_text())["keys"]]
        private: dict[str, Ed25519PrivateKey] = {}
        for info in infos:
            path = directory / f"{info.kid}.pem"
            check_secret_file(path)
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, Ed25519PrivateKey) or thumbprint(key.public_key()) != info.kid:
                raise ConfigurationError(f"key file {path.name} does not hold the Ed25519 key it is named for")
            private[info.kid] = key
        if sum(1 for i in infos if i.status == "active") != 1:
            raise ConfigurationError(f"key ring {directory} must have exactly one active key")
        return cls(directory, infos, private, recheck_seconds=recheck_seconds)

    def rotate(self) -> KeyInfo:
        """Make a new active key; the previous active key is retired but stays published."""
        key = Ed25519PrivateKey.generate()
        kid = thumbprint(key.public_key())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        create_secret_file(self._dir / f"{kid}.pem", pem)
        now = datetime.now(UTC)
        with self._lock:
            self._infos = [
                KeyInfo(i.kid, i.created_at, "retired", now, None) if i.status == "active" else i for i in self._infos
            ]
            info = KeyInfo(kid, now, "active")
            self._infos.append(info)
            self._private[kid] = key
            self._public[kid] = key.public_key()
            self._save()
            self._stamp = stamp(self._ring_file)
        return info

    def revoke(self, kid: str, since: datetime) -> KeyInfo:
        """Mark a compromised key; an active key must be rotated away first."""
        with self._lock:
            found = next((i for i in self._infos if i.kid == kid), None)
            if found is None:
                raise ConfigurationError(f"no key {kid} in this ring")
            if found.status == "active":
                raise ConfigurationError("rotate before revoking the active key")
            if found.status == "revoked":  # SECURITY: a later time would trust what it signed meanwhile
                raise ConfigurationError(f"key {kid} is revoked already; a revocation is never moved")
            revoked = KeyInfo(found.kid, found.created_at, "revoked", found.retired_at, since)
            self._infos = [revoked if i.kid == kid else i for i in self._infos]
            self._save()
            self._stamp = stamp(self._ring_file)
        return revoked

    def _save(self) -> None:
        body = json.dumps({"keys": [i.to_json() for i in self._infos]}, indent=2).encode()
        write_atomic(self._dir / _RING_FILE, body)

    # -- use ---------------------------------------------------------------------------------

    @property
    def keys(self) -> tuple[KeyInfo, ...]:
        return tuple(self._infos)

    @property
    def active(self) -> KeyInfo:
        return next(i for i in self._infos if i.status == "active")

    def info(self, kid: str) -> KeyInfo | None:
        for info in self._infos:
            if info.kid == kid:
                return info
        return None

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """Public keys, retired ones included so old signatures still verify."""
        keys: list[dict[str, Any]] = []
        for info in self._infos:
            jwk: dict[str, Any] = {
                **public_jwk(self._public[info.kid]),
                "kid": info.kid,
                "alg": ALGORITHM,
                "use": "sig",
            }
            jwk["status"] = info.status
            if info.retired_at:
                jwk["retired_at"] = info.retired_at.isoformat()
            if info.revoked_since:
                jwk["revoked_since"] = info.revoked_since.isoformat()
            keys.append(jwk)
        return {"keys": keys}

    def sign_jwt(self, claims: Mapping[str, Any]) -> str:
        self.refresh()
        info = self.active
        return jwt.encode(dict(claims), self._private[info.kid], algorithm=ALGORITHM, headers={"kid": info.kid})

    def sign_document(self, payload: bytes, *, typ: str) -> str:
        """Compact JWS over exactly `payload` (already canonical), with `kid` and `typ`.

        The same bytes PyJWT writes (a test holds them equal; Ed25519 is deterministic), built
        here because every receipt is signed on the request path: the encoded header is the
        same for every document of a key and `typ`, so it is made once, and what remains per
        document is two base64 encodings and the signature.

        libsodium makes the signature: 21 µs against OpenSSL's 33 here, the same 64 bytes
        (Ed25519 signatures are deterministic, and the stored receipts of the canonical fixture
        test are compared byte for byte).
        """
        self.refresh()
        kid = self.active.kid
        header = self._headers.get((kid, typ))
        if header is None:
            fields = canonical({"alg": ALGORITHM, "kid": kid, "typ": typ})
            header = self._headers[(kid, typ)] = _b64url(fields)
        signing_input = f"{header}.{_b64url(payload)}"
        secret = self._sodium.get(kid)
        if secret is None:
            seed = self._private[kid].private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
            secret = self._sodium[kid] = crypto_sign_seed_keypair(seed)[1]
        signature = crypto_sign(signing_input.encode("ascii"), secret)[:64]
        return f"{signing_input}.{_b64url(signature)}"

    def verify_jwt(
        self,
        token: str,
        *,
        audience: str,
        issuer: str,
        required: Iterable[str],
        leeway_seconds: int = 0,
    ) -> dict[str, Any]:
        self.refresh()
        # A token already verified with these parameters skips parsing and the signature (PyJWT
        # spends most of a request's authentication time there), never the checks that can
        # change: the key's status and the token's time window.
        remembered = (token, audience, issuer, tuple(required))
        hit = self._verified.get(remembered)
        if hit is not None:
            claims, cached_kid = hit
            info = self.info(cached_kid)
            now = time.time()
            if (
                info is not None
                and info.status != "revoked"
                and now < claims["exp"] + leeway_seconds
                and claims.get("nbf", 0) <= now + leeway_seconds
            ):
                return dict(claims)
            self._verified.pop(remembered, None)  # verify in full below, for the precise error
        # Step 1: header, algorithm pinned before any key is chosen.
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("the access token is malformed") from None
        if header.get("alg") != ALGORITHM:
            raise Unauthenticated("the access token's algorithm is not accepted")
        kid = header.get("kid")
        # Step 2: a known key that is not revoked.
        info = self.info(kid) if isinstance(kid, str) else None
        if info is None:
            raise Unauthenticated("the access token is signed by an unknown key")
        if info.status == "revoked":
            raise Unauthenticated("the access token is signed by a revoked key")
        # Steps 3 and 4: signature, then time, audience, issuer and required claims.
        claims = self._decode(
            token, info.kid, audience=audience, issuer=issuer, required=required, leeway=leeway_seconds
        )
        if len(self._verified) >= _VERIFIED_CACHE_SIZE:
            self._verified.clear()
        if "exp" in claims:
            self._verified[remembered] = (dict(claims), info.kid)
        return claims

    def _decode(
        self, token: str, kid: str, *, audience: str, issuer: str, required: Iterable[str], leeway: int
    ) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                self._public[kid],
                algorithms=[ALGORITHM],
                audience=audience,
                issuer=issuer,
                leeway=leeway,
                options={"require": list(required), "verify_iat": True},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the access token has expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated("the access token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("the access token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("the access token is from another issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"the access token lacks the {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated("the access token's signature does not verify") from None
        except jwt.PyJWTError:
            raise Unauthenticated("the access token is invalid") from None


@dataclass(frozen=True, slots=True)
class VerifiedDocument:
    """A JWS whose signature holds under a published key, and what the JWKS says of that key."""

    kid: str
    payload: bytes
    key_status: str
    revoked_since: datetime | None
    retired_at: datetime | None = None


def verify_document(token: str, jwks: Mapping[str, Any], *, typ: str) -> VerifiedDocument:
    """Check a receipt or checkpoint JWS against a published JWKS, with no access to any state.

    SECURITY, in order, failing closed: the header parses; `alg` is exactly EdDSA and `typ` is
    the expected one (a checkpoint never passes for a receipt); the `kid` names an Ed25519 key
    of the JWKS whose RFC 7638 thumbprint is that `kid` (so a JWKS entry cannot be relabelled);
    the signature verifies. What the payload says is the caller's to check.
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise SignatureInvalid("the JWS is malformed") from None
    if header.get("alg") != ALGORITHM:
        raise SignatureInvalid("the JWS algorithm is not EdDSA")
    if header.get("typ") != typ:
        raise SignatureInvalid(f"the JWS is not of type {typ}")
    kid = header.get("kid")
    listed = [k for k in jwks.get("keys", []) if isinstance(k, dict) and k.get("kid") == kid]
    if not isinstance(kid, str) or not listed:
        raise SignatureInvalid("the JWS is signed by a key that the JWKS does not publish")
    if len(listed) > 1:  # SECURITY: one copy revoked and one not; each verifier would pick its own
        raise SignatureInvalid("the JWKS lists this key more than once")
    (jwk,) = listed
    public = _ed25519_from_jwk(jwk)
    if public is None or thumbprint(public) != kid or jwk.get("alg", ALGORITHM) != ALGORITHM:
        raise SignatureInvalid("the JWKS entry for this key is not an Ed25519 key with a matching thumbprint")
    try:
        verified = jwt.api_jws.decode_complete(token, public, algorithms=[ALGORITHM])
    except jwt.PyJWTError:
        raise SignatureInvalid("the signature does not verify") from None
    revoked, retired = jwk.get("revoked_since"), jwk.get("retired_at")
    return VerifiedDocument(
        kid=kid,
        payload=verified["payload"],
        key_status=str(jwk.get("status", "active")),
        revoked_since=_when(revoked),
        retired_at=_when(retired),
    )


def _when(text: Any) -> datetime | None:
    """A JWKS time; unreadable counts as none (a revocation without a time then trusts nothing)."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _ed25519_from_jwk(jwk: Mapping[str, Any]) -> Ed25519PublicKey | None:
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or not isinstance(jwk.get("x"), str):
        return None
    try:
        raw = base64.urlsafe_b64decode(jwk["x"] + "=" * (-len(jwk["x"]) % 4))
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        return None
