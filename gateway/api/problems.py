"""RFC 9457 problem+json for every error, from one place.

SECURITY: the body says what the caller can act on and nothing more. Validation errors name
the field and the rule, never echo the value sent; unexpected exceptions become a bare 500
that carries only the request id, and the cause goes to the server log.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.errors import InternalError, InvalidRequest, MethodNotAllowed, NotFound, PolicyInvalid, VeilgateError
from gateway.observability.logs import bare_trace

PROBLEM_MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("veilgate.api")


def request_id_of(request: Request) -> str:
    return str(getattr(request.state, "request_id", "unknown"))


def problem_body(error: VeilgateError, request_id: str) -> dict[str, Any]:
    return {
        "type": error.type_uri,
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "instance": f"urn:veilgate:request:{request_id}",
    }


def problem(
    request: Request,
    error: VeilgateError,
    *,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body = problem_body(error, request_id_of(request))
    request.state.problem = error.type_slug  # the reason its audit event records
    if extra:
        body.update(extra)
    return JSONResponse(body, status_code=error.status, headers=error.headers, media_type=PROBLEM_MEDIA_TYPE)


_SOURCES = frozenset({"body", "query", "path", "header", "cookie"})
_UNION_TAGS = frozenset(
    f"{prefix}{kind}" for prefix in ("", "constrained-") for kind in ("str", "int", "float", "bool", "bytes", "decimal")
)
"""pydantic's names for the members of a union in a location (`body.epsilon.constrained-str`)."""


def _public_names(request: Request) -> frozenset[str]:
    """Every parameter and property name the API documents: the names a location may show."""
    app = request.app
    names: frozenset[str] | None = getattr(app.state, "public_field_names", None)
    if names is None:
        found: set[str] = set(_SOURCES | _UNION_TAGS)
        _collect(app.openapi(), found)
        names = frozenset(found)
        app.state.public_field_names = names
    return names


def _collect(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        for definitions in ("schemas", "$defs"):  # model names: a union's member in a location
            if isinstance(node.get(definitions), dict):
                found.update(str(k) for k in node[definitions])
        properties = node.get("properties")
        if isinstance(properties, dict):
            found.update(str(k) for k in properties)
        if node.get("in") in _SOURCES and isinstance(node.get("name"), str):
            found.add(node["name"])
        for value in node.values():
            _collect(value, found)
    elif isinstance(node, list):
        for value in node:
            _collect(value, found)


def _location(loc: tuple[Any, ...] | list[Any], public: frozenset[str]) -> str:
    """Field names the API documents and list positions; a caller's own key shows as `<key>`."""
    return ".".join(str(p) if isinstance(p, int) or p in public else "<key>" for p in loc)


def _where(error: Any) -> tuple[Any, ...]:
    """An unknown field is located at its parent: its own name is the caller's."""
    loc = tuple(error.get("loc", ()))
    return loc[:-1] if error.get("type") == "extra_forbidden" else loc


def _rule(error: Any) -> str:
    """pydantic's message, but for an unknown field, whose name is the caller's."""
    if error.get("type") == "extra_forbidden":
        return "an unknown field: only the documented fields are accepted (see /openapi.json)"
    return str(error.get("msg", "invalid"))


async def _on_veilgate_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, VeilgateError):  # pragma: no cover - registered for this class only
        return problem(request, unexpected_error(request_id_of(request), exc))
    if exc.status >= 500:
        log.error("request %s failed: %s", request_id_of(request), type(exc).__name__)
    if isinstance(exc, PolicyInvalid):  # every error, so that a bundle is fixed in one round
        return problem(request, exc, extra={"errors": exc.errors})
    return problem(request, exc)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    # SECURITY: only location and rule; pydantic's `input` would echo what was sent, and so would
    # a location naming a key the caller made up (an unknown field, a dict key).
    public = _public_names(request)
    items = [{"location": _location(_where(e), public), "message": _rule(e)} for e in errors]
    first = items[0] if items else {"location": "request", "message": "invalid"}
    detail = f"{first['location']}: {first['message']}"
    if len(items) > 1:
        detail += f" (and {len(items) - 1} more)"
    return problem(request, InvalidRequest(detail), extra={"errors": items})


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    status = exc.status_code if isinstance(exc, StarletteHTTPException) else 500
    if status == 404:
        return problem(request, NotFound("no resource at this path; see the OpenAPI document at /openapi.json"))
    if status == 405:
        error = MethodNotAllowed("this method is not allowed on this path; the Allow header lists those that are")
        headers = exc.headers if isinstance(exc, StarletteHTTPException) and exc.headers else {}
        allow = next((v for k, v in headers.items() if k.lower() == "allow"), None)
        if allow:
            error.headers = {"Allow": allow}
        return problem(request, error)
    generic = VeilgateError("the request could not be served")
    generic.status = status
    generic.type_slug = "http-error"
    generic.title = "HTTP error"
    return problem(request, generic)


def unexpected_error(request_id: str, exc: BaseException) -> VeilgateError:
    """Log an unexpected exception with its request id; the client learns nothing of it.

    SECURITY: the log names the exception's type and where it was raised, not its text: a
    library's message can quote the value it failed on (`12720000000000000 exceeds safe integer
    domain`, a key DuckDB could not convert), and that value came from a record or a caller."""
    log.error(
        "request %s failed with an unexpected %s (this is a bug)\n%s", request_id, type(exc).__name__, bare_trace(exc)
    )
    return InternalError("an internal error occurred; quote the request id when reporting it")


def install(app: FastAPI) -> None:
    app.add_exception_handler(VeilgateError, _on_veilgate_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    # Anything else is caught by `middleware.RequestContext`, which renders `unexpected_error`.
