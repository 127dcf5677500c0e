"""Client secrets: made, hashed (salted scrypt) and checked in constant time.

A secret that grants a privileged role is split in two halves, one shown to the administrator
who proposed the change and one to the administrator who approved it: neither alone can use it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
PREFIX = "vgs_"  # a visible prefix so leaked secrets are recognisable


def hash_secret(secret: str, *, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${digest.hex()}"


def is_secret_match(secret: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    candidate = hashlib.scrypt(
        secret.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=len(digest) // 2
    )
    return hmac.compare_digest(candidate.hex(), digest)


DUMMY_HASH = hash_secret("veilgate-dummy-secret", salt=b"\0" * 16)
"""Checked when no account matches, so that a check costs the same either way."""


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def first_half() -> str:
    """The proposer's half of a split secret; the approver's half is `second_half()`."""
    return PREFIX + secrets.token_urlsafe(16)


def second_half() -> str:
    return secrets.token_urlsafe(16)
