"""Client credentials in, access token out; access token in, principal out. Also the console's
sessions: tokens for their own audience, whose logout is recorded (`SessionStore`)."""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gateway.domain.principal import Principal, Role
from gateway.errors import Unauthenticated
from gateway.signing import KeyRing
from gateway.state.ports import AccountStore, SessionStore

REQUIRED_CLAIMS = ("iss", "aud", "sub", "iat", "exp", "jti", "roles")


@dataclass(frozen=True, slots=True)
class TokenGrant:
    access_token: str
    expires_in: int
    client_id: str
    organisation: str


def issue_token(
    clients: AccountStore,
    keys: KeyRing,
    client_id: str,
    client_secret: str,
    *,
    issuer: str,
    audience: str,
    ttl_seconds: int,
    now: datetime | None = None,
) -> TokenGrant:
    # 1. The credentials belong to an enabled client (constant cost either way).
    client = clients.check_credentials(client_id, client_secret)
    if client is None:
        raise Unauthenticated("the client id or secret is wrong, or the client is disabled")
    # 2. Sign a short-lived token naming the client, its organisation and its roles.
    return TokenGrant(
        mint_token(
            keys,
            client.client_id,
            client.organisation,
            client.roles,
            issuer=issuer,
            audience=audience,
            ttl_seconds=ttl_seconds,
            now=now,
            generation=client.token_generation,
        ),
        ttl_seconds,
        client.client_id,
        client.organisation,
    )


def mint_token(
    keys: KeyRing,
    client_id: str,
    organisation: str,
    roles: frozenset[Role],
    *,
    issuer: str,
    audience: str,
    ttl_seconds: int,
    now: datetime | None = None,
    generation: int = 0,
) -> str:
    """`generation`: the account's token generation (`Account.token_generation`)."""
    issued = now or datetime.now(UTC)
    return keys.sign_jwt(
        {
            "gen": generation,
            "iss": issuer,
            "aud": audience,
            "sub": client_id,
            "org": organisation,
            "roles": sorted(r.value for r in roles),
            "iat": int(issued.timestamp()),
            "nbf": int(issued.timestamp()),
            "exp": int((issued + timedelta(seconds=ttl_seconds)).timestamp()),
            "jti": secrets.token_urlsafe(16),
        }
    )


@functools.lru_cache(maxsize=64)
def _roles(names: tuple[str, ...]) -> frozenset[Role]:
    """The roles a token names (the same few lists on every request: parsed once each)."""
    try:
        return frozenset(Role(r) for r in names)
    except ValueError:
        raise Unauthenticated("the access token names an unknown role") from None


def authenticate(
    clients: AccountStore,
    keys: KeyRing,
    token: str,
    *,
    issuer: str,
    audience: str,
    leeway_seconds: int,
) -> Principal:
    # 1. Signature, algorithm, key, time, audience, issuer and required claims.
    claims = keys.verify_jwt(
        token, audience=audience, issuer=issuer, required=REQUIRED_CLAIMS, leeway_seconds=leeway_seconds
    )
    # 2. Claims have the types we rely on.
    roles_claim = claims["roles"]
    if not isinstance(roles_claim, list) or not all(isinstance(r, str) for r in roles_claim):
        raise Unauthenticated("the access token's roles claim is malformed")
    roles = _roles(tuple(roles_claim))
    subject, token_id = claims["sub"], claims["jti"]
    if not isinstance(subject, str) or not isinstance(token_id, str):
        raise Unauthenticated("the access token's sub or jti claim is malformed")
    # 3. The client still exists and is enabled: disabling a client stops its tokens at once.
    client = clients.find(subject)
    if client is None or client.disabled:
        raise Unauthenticated("the client of this access token is disabled")
    # A token from before a disable or a role taken away stays void once the account is back.
    if claims.get("gen", 0) != client.token_generation:
        raise Unauthenticated("the access token was issued before its account was disabled or lost a role")
    # 4. Roles can only shrink after issue: a token never grants more than the account has now.
    return Principal(client.client_id, client.organisation, roles & client.roles, token_id)


def console_audience(audience: str) -> str:
    """SECURITY: a console session's token names its own `aud`, so the API refuses it as a
    bearer token (a copied cookie reaches no API route) and only the console, never the API's
    hot paths, looks up whether a session has ended."""
    return f"{audience}#console"


def authenticate_session(
    clients: AccountStore,
    keys: KeyRing,
    sessions: SessionStore,
    token: str,
    *,
    issuer: str,
    audience: str,
    leeway_seconds: int,
) -> Principal:
    """The principal of a console session's token; `audience` is the API's."""
    # 1. A valid token of the console's audience, of an enabled client (as `authenticate`).
    found = authenticate(
        clients, keys, token, issuer=issuer, audience=console_audience(audience), leeway_seconds=leeway_seconds
    )
    # 2. SECURITY: not logged out, in this process or any other: a cookie copied before logout
    # is refused from then on, not only when the token expires.
    if sessions.has_ended(found.token_id):
        raise Unauthenticated("this console session was logged out")
    return found


def end_session(
    keys: KeyRing,
    sessions: SessionStore,
    token: str,
    *,
    issuer: str,
    audience: str,
    leeway_seconds: int,
) -> bool:
    """Record a console session's token as ended until it would expire anyway; False for a
    token that is no valid console session (nothing to end)."""
    try:
        claims = keys.verify_jwt(
            token,
            audience=console_audience(audience),
            issuer=issuer,
            required=REQUIRED_CLAIMS,
            leeway_seconds=leeway_seconds,
        )
    except Unauthenticated:
        return False
    session_id, expires = claims["jti"], claims["exp"]
    if not isinstance(session_id, str) or not isinstance(expires, int):
        return False
    sessions.end(session_id, until=expires + leeway_seconds)
    return True
