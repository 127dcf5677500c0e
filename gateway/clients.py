"""Client accounts for OAuth2 client credentials: `<state_dir>/clients.json`, or PostgreSQL.

Owns client records. Imports no other leaf. Invariants:
- a client secret is shown once, when it is made, and stored only as a salted scrypt hash;
- checking a secret costs the same whether or not the client exists, and compares in constant
  time, so timing tells nothing about which client ids exist;
- disabling a client stops its tokens on the next request: in every process of the machine
  (the file is re-read when it changes) and, on PostgreSQL, on every replica once the change's
  notice arrives;
- the file is replaced atomically and is readable by its owner only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway import postgres_db
from gateway.atomic_files import Stamp, stamp, write_atomic
from gateway.domain.principal import Role
from gateway.errors import Conflict, NotFound

log = logging.getLogger("veilgate.clients")
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


def _record(client: Client) -> dict[str, Any]:
    return {
        "client_id": client.client_id,
        "organisation": client.organisation,
        "roles": sorted(r.value for r in client.roles),
        "secret_hash": client.secret_hash,
        "created_at": client.created_at.isoformat(),
        "disabled": client.disabled,
    }


def _client(item: dict[str, Any]) -> Client:
    return Client(
        client_id=item["client_id"],
        organisation=item["organisation"],
        roles=frozenset(Role(r) for r in item["roles"]),
        secret_hash=item["secret_hash"],
        created_at=datetime.fromisoformat(item["created_at"]),
        disabled=bool(item.get("disabled", False)),
    )


def _new_secret() -> str:
    return _SECRET_PREFIX + secrets.token_urlsafe(32)


class ClientStore:
    """The accounts, whichever store holds them (`FileClientStore`, `PostgresClientStore`)."""

    def _clients(self) -> dict[str, Client]:  # pragma: no cover - each store has its own
        raise NotImplementedError

    def add(self, client_id: str, organisation: str, roles: Iterable[Role]) -> str:  # pragma: no cover
        """Create a client and return its secret, which is not stored and cannot be shown again."""
        raise NotImplementedError

    def disable(self, client_id: str) -> None:  # pragma: no cover
        raise NotImplementedError

    def find(self, client_id: str) -> Client | None:
        return self._clients().get(client_id)

    def all(self) -> list[Client]:
        return list(self._clients().values())

    def check_credentials(self, client_id: str, secret: str) -> Client | None:
        """The enabled client these credentials belong to, or None; same cost either way."""
        client = self.find(client_id)
        matches = is_secret_match(secret, client.secret_hash if client else _DUMMY_HASH)
        if client is None or not matches or client.disabled:
            return None
        return client

    def close(self) -> None:
        """Release what the store holds open (nothing, for the file)."""


class FileClientStore(ClientStore):
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
        clients = {item["client_id"]: _client(item) for item in raw["clients"]}
        self._cache = (current, clients)
        return clients

    def _clients(self) -> dict[str, Client]:
        with self._lock:
            return self._read()

    def _write(self, clients: dict[str, Client]) -> None:
        body = {"clients": [_record(c) for c in clients.values()]}
        write_atomic(self._path, json.dumps(body, indent=2).encode())

    def add(self, client_id: str, organisation: str, roles: Iterable[Role]) -> str:
        secret = _new_secret()
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


_PG_SCHEMA = "CREATE TABLE IF NOT EXISTS clients (client_id TEXT PRIMARY KEY, record TEXT NOT NULL)"
_CHANNEL = "veilgate_clients"
_UNAVAILABLE = "the client accounts cannot be read"


class PostgresClientStore(ClientStore):
    """Accounts in PostgreSQL, kept in memory by every replica and renewed on each NOTIFY: a
    token is checked against them on every request, at no database cost."""

    def __init__(self, dsn: str, *, schema: str, listen: bool = True, seed_from: Path | None = None) -> None:
        """`seed_from`: a `clients.json` whose accounts are copied in if the table is empty (the
        first replica of an installation that kept its accounts in the file)."""
        self._db = postgres_db.Reader.shared(dsn, schema, unavailable=_UNAVAILABLE)
        self._db.create_tables("veilgate_clients", (_PG_SCHEMA,))
        if seed_from is not None and (seeded := self.import_from(seed_from)):
            log.warning("client accounts: %d copied from %s into PostgreSQL", seeded, seed_from)
        self._watched = postgres_db.Watched(dsn, schema, channel=_CHANNEL, load=self._load, listen=listen)

    def import_from(self, path: Path) -> int | None:
        """Copy the accounts of a `clients.json` here, if there are none yet (else None)."""
        found = FileClientStore(path).all()
        with self._db.transaction() as db:
            db.execute("SELECT pg_advisory_xact_lock(hashtext('veilgate_clients'))")  # one replica copies them
            if not postgres_db.is_empty(db, (("clients", ()),)):
                return None
            db.executemany("INSERT INTO clients VALUES (?, ?)", [(c.client_id, json.dumps(_record(c))) for c in found])
            db.execute(f"NOTIFY {_CHANNEL}")  # a fixed name, not input
        return len(found)

    def _load(self) -> dict[str, Client]:
        return {
            key: _client(json.loads(record)) for key, record in self._db.rows("SELECT client_id, record FROM clients")
        }

    def _clients(self) -> dict[str, Client]:
        return self._watched.get()

    def add(self, client_id: str, organisation: str, roles: Iterable[Role]) -> str:
        secret = _new_secret()
        made = Client(client_id, organisation, frozenset(roles), hash_secret(secret), datetime.now(UTC))
        with self._db.transaction() as db:
            inserted = db.execute(
                "INSERT INTO clients VALUES (?, ?) ON CONFLICT DO NOTHING", (client_id, json.dumps(_record(made)))
            ).rowcount
            if inserted != 1:
                raise Conflict(f"client {client_id!r} already exists")
            db.execute(f"NOTIFY {_CHANNEL}")  # a fixed name, not input
        self._watched.renew()
        return secret

    def disable(self, client_id: str) -> None:
        with self._db.transaction() as db:
            rows = db.execute("SELECT record FROM clients WHERE client_id = ? FOR UPDATE", (client_id,)).fetchall()
            if not rows:
                raise NotFound(f"no client {client_id!r}")
            record = {**json.loads(rows[0][0]), "disabled": True}
            db.execute("UPDATE clients SET record = ? WHERE client_id = ?", (json.dumps(record), client_id))
            db.execute(f"NOTIFY {_CHANNEL}")  # a fixed name, not input
        self._watched.renew()

    def close(self) -> None:
        self._watched.close()
        self._db.close()


def open_clients(path: Path, *, dsn: str | None = None, schema: str = "veilgate", listen: bool = True) -> ClientStore:
    """The accounts as configured: in PostgreSQL when `dsn` is set, else the file at `path`."""
    if dsn:
        return PostgresClientStore(dsn, schema=schema, listen=listen, seed_from=path)
    return FileClientStore(path)
