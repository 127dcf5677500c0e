"""FastAPI dependencies: the runtime, and the authenticated principal with its roles."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request

from gateway.domain.principal import Principal, Role
from gateway.errors import PolicyDenied, Unauthenticated
from gateway.services import authentication
from gateway.services.runtime import Runtime

# Dependencies are `async def` although they do not await: FastAPI runs a plain `def` dependency
# in the thread pool, and a thread hop per dependency costs more than the work (a dict lookup,
# a remembered token, two stat calls).


async def runtime(request: Request) -> Runtime:
    found: Runtime = request.app.state.runtime
    return found


async def principal(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("send an access token as `Authorization: Bearer <token>`; get one at POST /v1/token")
    rt: Runtime = request.app.state.runtime
    found = authentication.authenticate(
        rt.clients,
        rt.token_keys,
        token.strip(),
        issuer=rt.settings.issuer,
        audience=rt.settings.audience,
        leeway_seconds=rt.settings.clock_leeway_seconds,
    )
    request.state.principal = found
    return found


def require_role(*roles: Role) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency that admits a principal holding any of `roles`."""

    async def check(request: Request) -> Principal:
        found = await principal(request)
        if not any(found.has_role(r) for r in roles):
            names = " or ".join(r.value for r in roles)
            raise PolicyDenied(f"this endpoint needs the {names} role")
        return found

    return check


_Endpoint = TypeVar("_Endpoint", bound=Callable[..., Any])
SELF_AUTHENTICATING = "_veilgate_self_authenticating"


def reads_bearer_token(endpoint: _Endpoint) -> _Endpoint:
    """Mark an endpoint that calls `principal` itself instead of through a dependency (the hot
    paths take none), so the API document still lists its 401."""
    setattr(endpoint, SELF_AUTHENTICATING, True)
    return endpoint
