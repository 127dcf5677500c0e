"""A verified access token is remembered, but never past its key's revocation or its expiry."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.domain.principal import Role
from gateway.errors import Unauthenticated
from gateway.services.authentication import mint_token
from gateway.signing import KeyRing

REQUIRED = ("exp", "iat", "nbf", "sub", "aud", "iss", "jti")


def _verify(ring: KeyRing, token: str, audience: str = "veilgate-api") -> dict[str, object]:
    return ring.verify_jwt(token, audience=audience, issuer="veilgate", required=REQUIRED)


def _mint(ring: KeyRing, *, ttl: int = 900, now: datetime | None = None) -> str:
    return mint_token(
        ring,
        "demo-business",
        "Bank",
        frozenset({Role.CONSUMER}),
        issuer="veilgate",
        audience="veilgate-api",
        ttl_seconds=ttl,
        now=now,
    )


def test_a_remembered_token_still_dies_with_its_key(tmp_path: Path) -> None:
    ring = KeyRing.create(tmp_path / "token")
    token = _mint(ring)
    assert _verify(ring, token)["sub"] == "demo-business"
    assert _verify(ring, token)["sub"] == "demo-business"  # from memory
    kid = ring.active.kid
    ring.rotate()
    assert _verify(ring, token)["sub"] == "demo-business"  # retired keys still verify tokens
    ring.revoke(kid, since=datetime.now(UTC) - timedelta(hours=1))
    with pytest.raises(Unauthenticated, match="revoked"):
        _verify(ring, token)


def test_a_remembered_token_still_expires(tmp_path: Path) -> None:
    ring = KeyRing.create(tmp_path / "token")
    token = _mint(ring, ttl=60, now=datetime.now(UTC) - timedelta(seconds=59))  # one second left
    _verify(ring, token)
    time.sleep(1.5)
    with pytest.raises(Unauthenticated, match="expired"):
        _verify(ring, token)


def test_memory_is_per_audience(tmp_path: Path) -> None:
    ring = KeyRing.create(tmp_path / "token")
    token = _mint(ring)
    _verify(ring, token)
    with pytest.raises(Unauthenticated, match="another audience"):
        _verify(ring, token, audience="someone-else")


def test_a_changed_byte_is_never_remembered(tmp_path: Path) -> None:
    ring = KeyRing.create(tmp_path / "token")
    token = _mint(ring)
    _verify(ring, token)
    tampered = token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB")
    with pytest.raises(Unauthenticated):
        _verify(ring, tampered)
