"""The OpenAPI document as the API really behaves: the bearer scheme on every route that reads a
token, and the problem responses each route can give (401, 403, 404, 409, 413, 422, 429).

FastAPI documents only the success response and 422; this adds the rest from what each route
depends on (a token, a role, path parameters, a body) and from what its service refuses (a
grant, a budget, a limit), so a client written from the document handles every answer.
Imports nothing from the stores: it reads the routes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI, routing
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from gateway.api import deps

BEARER = "bearer"
PROBLEM_SCHEMA = "Problem"

_MEANINGS = {
    401: "No valid access token: missing, expired, malformed, or its client is disabled.",
    403: "Refused by policy: the role, a grant, or a freeze (`policy-denied`, `frozen`).",
    404: "No such resource, or none that this caller may see.",
    409: "Conflicts with the current state: a budget exhausted, a change made from an older "
    "version, a step out of order, a service not served now.",
    413: "The request body exceeds `max_body_bytes`.",
    422: "The request is invalid: the location and the rule, never the value sent.",
    429: "A rate or probing limit is reached; `Retry-After` says when to try again.",
}

# Routes whose service spends a grant, a budget or a limit: a consumer's use of the data.
_USE_PREFIXES = ("/v1/verify/", "/v1/aggregate", "/v1/models/", "/v1/jobs")
# Routes whose service looks up a named resource given in the body or query.
_LOOKUP_PREFIXES = (*_USE_PREFIXES, "/v1/objections", "/v1/admin/grants", "/v1/admin/consumers")


def api_routes(app: FastAPI) -> Iterator[tuple[str, APIRoute]]:
    """(path, route) for every documented route, whether FastAPI keeps included routers nested
    (newer versions: `iter_route_contexts`) or flattened (older ones)."""
    contexts: Callable[[Any], Iterator[Any]] | None = getattr(routing, "iter_route_contexts", None)
    for item in contexts(app.routes) if contexts is not None else app.routes:
        route = getattr(item, "original_route", item)
        if isinstance(route, APIRoute) and route.include_in_schema:
            yield str(getattr(item, "path_format", None) or route.path_format), route


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


def is_authenticated(route: APIRoute) -> bool:
    """The route reads a bearer token: through a dependency (the principal, a role check), or
    itself, marked by `deps.reads_bearer_token` (the hot paths, which take no dependencies)."""
    if any(call is deps.principal or _is_role_check(call) for call in _calls(route.dependant)):
        return True
    return bool(getattr(route.endpoint, deps.SELF_AUTHENTICATING, False))


def _is_role_check(call: Callable[..., Any]) -> bool:
    return getattr(call, "__qualname__", "").startswith(f"{deps.require_role.__name__}.")


def statuses(route: APIRoute, path: str) -> set[int]:
    """The problem statuses this route can answer with, besides 500 and 503."""
    found: set[int] = set()
    dependant = route.dependant
    methods = route.methods or set()
    writes = bool(methods - {"GET", "HEAD"})
    has_input = bool(dependant.path_params or dependant.query_params or dependant.body_params)
    has_input = has_input or (route.openapi_extra is not None and "requestBody" in route.openapi_extra)
    if is_authenticated(route):
        found.add(401)
    if any(_is_role_check(c) for c in _calls(dependant)) or path.startswith(_USE_PREFIXES):
        found.add(403)
    if dependant.path_params or (path.startswith(_LOOKUP_PREFIXES) and writes):
        found.add(404)
    if path.startswith(_USE_PREFIXES) and writes:
        found.update({409, 429})
    if writes and path.startswith("/v1/admin/"):
        found.add(409)
    if path == "/v1/token":
        found.add(429)
    if writes:
        found.add(413)
    if has_input:
        found.add(422)
    return found


def _problem_schema() -> dict[str, Any]:
    text = {"type": "string"}
    return {
        "title": PROBLEM_SCHEMA,
        "description": "RFC 9457 problem details; switch on `type`, a permanent URI.",
        "type": "object",
        "required": ["type", "title", "status", "detail", "instance"],
        "properties": {
            "type": text,
            "title": text,
            "status": {"type": "integer"},
            "detail": text,
            "instance": text,
            "errors": {"type": "array", "items": {"type": "object"}},
        },
    }


def document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document with the security scheme and every route's problem responses."""
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes, tags=app.openapi_tags
    )
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})[BEARER] = {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An access token from POST /v1/token (OAuth2 client credentials).",
    }
    components.setdefault("schemas", {})[PROBLEM_SCHEMA] = _problem_schema()
    problem_ref = {"$ref": f"#/components/schemas/{PROBLEM_SCHEMA}"}
    for path, route in api_routes(app):
        for method in route.methods or ():
            operation = schema.get("paths", {}).get(path, {}).get(method.lower())
            if operation is None:
                continue
            if is_authenticated(route):
                operation["security"] = [{BEARER: []}]
            responses = operation.setdefault("responses", {})
            for status in sorted(statuses(route, path)):
                responses[str(status)] = {
                    "description": _MEANINGS[status],
                    "content": {"application/problem+json": {"schema": problem_ref}},
                }
    return schema


def install(app: FastAPI) -> None:
    """Serve this document at /openapi.json, built once on first use."""
    built: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if not built:
            built.update(document(app))
        return built

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customise it
