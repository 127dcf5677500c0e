"""Client accounts for OAuth2 client credentials: `<state_dir>/clients.json`.

Owns client records. Imports no other leaf. Invariants:
- a client secret is shown once, when it is made, and stored only as a salted scrypt hash;
- checking a secret costs the same whether or not the client exists, and compares in constant
  time, so timing tells nothing about which client ids exist;
- the file is replaced atomically and is readable by its owner only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gateway.atomic_files import Stamp, stamp, write_atomic
from gateway.domain.principal import Role
from gateway.errors import Conflict, NotFound

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_SECRET_PREFIX = "vgs_"  # noqa: S105 - a visible prefix so leaked secrets are recognisable


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


_DUMMY_HASH = hash_secret("veilgate-dummy-secret", salt=b"\0" * 16)


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    organisation: str
    roles: frozenset[Role]
    secret_hash: str
    created_at: datetime
    disabled: bool = False


class ClientStore:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._cache: tuple[Stamp, dict[str, Client]] | None = None

    def _read(self) -> dict[str, Client]:
        current = stamp(self._path)
        if current is None:
            return {}
        if self._cache is not None and self._cache[0] == current:
            return self._cache[1]
        raw = json.loads(self._path.read_text(encoding="utf-8"))
        clients = {
            item["client_id"]: Client(
                client_id=item["client_id"],
                organisation=item["organisation"],
                roles=frozenset(Role(r) for r in item["roles"]),
                secret_hash=item["secret_hash"],
                created_at=datetime.fromisoformat(item["created_at"]),
                disabled=bool(item.get("disabled", False)),
            )
            for item in raw["clients"]
        }
        self._cache = (current, clients)
        return clients

    def _write(self, clients: dict[str, Client]) -> None:
        body = {
            "clients": [
                {
                    "client_id": c.client_id,
                    "organisation": c.organisation,
                    "roles": sorted(r.value for r in c.roles),
                    "secret_hash": c.secret_hash,
                    "created_at": c.created_at.isoformat(),
                    "disabled": c.disabled,
                }
                for c in clients.values()
            ]
        }
        write_atomic(self._path, json.dumps(body, indent=2).encode())

    def add(self, client_id: str, organisation: str, roles: Iterable[Role]) -> str:
        """Create a client and return its secret, which is not stored and cannot be shown again."""
        secret = _SECRET_PREFIX + secrets.token_urlsafe(32)
        with self._lock:
            clients = dict(self._read())
            if client_id in clients:
                raise Conflict(f"client {client_id!r} already exists")
            clients[client_id] = Client(
                client_id, organisation, frozenset(roles), hash_secret(secret), datetime.now(UTC)
            )
            self._write(clients)
        return secret

    def disable(self, client_id: str) -> None:
        with self._lock:
            clients = dict(self._read())
            found = clients.get(client_id)
            if found is None:
                raise NotFound(f"no client {client_id!r}")
            clients[client_id] = Client(
                found.client_id, found.organisation, found.roles, found.secret_hash, found.created_at, True
            )
            self._write(clients)

    def find(self, client_id: str) -> Client | None:
        with self._lock:
            return self._read().get(client_id)

    def all(self) -> list[Client]:
        with self._lock:
            return list(self._read().values())

    def check_credentials(self, client_id: str, secret: str) -> Client | None:
        """The enabled client these credentials belong to, or None; same cost either way."""
        client = self.find(client_id)
        matches = is_secret_match(secret, client.secret_hash if client else _DUMMY_HASH)
        if client is None or not matches or client.disabled:
            return None
        return client
