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


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


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
    # SECURITY: only location and message; pydantic's `input` would echo what was sent.
    items = [{"location": _location(e.get("loc", ())), "message": str(e.get("msg", "invalid"))} for e in errors]
    first = items[0] if items else {"location": "request", "message": "invalid"}
    detail = f"{first['location']}: {first['message']}"
    if len(items) > 1:
        detail += f" (and {len(items) - 1} more)"
    return problem(request, InvalidRequest(detail), extra={"errors": items})


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    status = exc.status_code if isinstance(exc, StarletteHTTPException) else 500
    if status == 404:
        return problem(request, NotFound(f"no resource at {request.url.path}"))
    if status == 405:
        error = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
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
    """Log an unexpected exception with its request id; the client learns nothing of it."""
    log.error("request %s failed with an unexpected %s (this is a bug)", request_id, type(exc).__name__, exc_info=exc)
    return InternalError("an internal error occurred; quote the request id when reporting it")


def install(app: FastAPI) -> None:
    app.add_exception_handler(VeilgateError, _on_veilgate_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    # Anything else is caught by `middleware.RequestContext`, which renders `unexpected_error`.
