"""The two hot paths, `POST /v1/verify/{service}` and `POST /v1/models/{model}/score`, served
without FastAPI's request handling.

`HotPaths` is a pure ASGI layer inside the request middleware (request id, body cap, audit
record) and outside FastAPI's routing: a POST to one of these paths is matched by one regular
expression and answered here; everything else goes on to the app. FastAPI still declares both
routes (routes/verify.py, routes/models.py), for the OpenAPI document, for other methods (405
with Allow) and as the route object the audit event names, and their endpoints call the same
handlers here, so there is one implementation. What is left per request: authentication, the
body decoded by msgspec (`hot_bodies`), the use case, and the response written from the
receipt's own canonical bytes (`Release.body_bytes`).

Refusals are rendered by the app's own exception handlers (`problems.py`): the same problem+json
with the same locations as on every route.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.api.auditing import allowed_event, note, released_response
from gateway.api.deps import principal
from gateway.api.hot_bodies import ScoreRequest, VerifyRequest, decode
from gateway.domain.names import NAME_PATTERN
from gateway.domain.trail import AuditEvent
from gateway.services import scoring, verification
from gateway.services.claims import AuditNote
from gateway.services.release import PendingRelease
from gateway.services.runtime import Runtime
from gateway.state.ports import Admission, Window

Handler = Callable[[Request, str], Awaitable[Response]]
Prepared = TypeVar("Prepared")

_VERIFY = re.compile(r"/v1/verify/([^/]+)")
_SCORE = re.compile(r"/v1/models/([^/]+)/score")
_NAME = re.compile(NAME_PATTERN)


def rate_limit_headers(windows: tuple[Window, ...]) -> dict[str, str]:
    """IETF HTTPAPI rate-limit fields: the policies, and what is left of each."""
    return {
        "RateLimit-Policy": _policies(tuple((w.name, w.limit, w.window_seconds) for w in windows)),
        "RateLimit": ", ".join(f'"{w.name}";r={max(0, w.remaining)};t={w.reset_seconds}' for w in windows),
    }


@functools.lru_cache(maxsize=64)
def _policies(windows: tuple[tuple[str, int, int], ...]) -> str:
    """The policies change only with the bundle: written once per set of limits."""
    return ", ".join(f'"{name}";q={limit};w={seconds}' for name, limit, seconds in windows)


def as_sent(raw: bytes) -> Any:
    """The body as the caller sent it (valid JSON: it decoded), for the receipt's request digest:
    a client checks that digest against what it sent, so no default may be filled in."""
    return orjson.loads(raw)


async def verify(request: Request, service: str) -> Response:
    """Answer each claim with match, no_match (or not_found, where the service says so) per field."""
    who = await principal(request)  # authentication first: nothing of the body is read before
    raw = await request.body()
    body = decode(VerifyRequest, raw)
    rt: Runtime = request.app.state.runtime
    audit_note = AuditNote()
    call = verification.VerifyCall(
        service=service,
        purpose=body.purpose,
        claims=[verification.Claim(c.keys, c.checks, c.consent_ref) for c in body.claims],
        body=as_sent(raw),
    )
    # Async, awaiting the two durable steps (ledger, audit leaf) instead of blocking a thread:
    # the CPU work is a fraction of a millisecond, and thread hops under load cost more.
    try:
        event = allowed_event(request)
        if verification.answers_in_memory(rt, service):
            prepared = verification.prepare(rt, who, event, call, audit_note)
        else:  # an index to build or DuckDB lookups: off the event loop
            prepared = await asyncio.to_thread(verification.prepare, rt, who, event, call, audit_note)
        admission, pending, seq = await rt.releases.admit_and_log(
            prepared.admission,
            now=prepared.now,
            build=functools.partial(_built, verification.pending_release, rt, prepared),
        )
    finally:  # what the leaf records, refusals included
        note(request, service=audit_note.service, subjects=audit_note.subjects)
    return released_response(request, pending.complete(rt, seq), rate_limit_headers(admission.windows))


async def score(request: Request, model: str) -> Response:
    """Score each entity in the domain: only its score and/or grade band leave, signed."""
    who = await principal(request)
    raw = await request.body()
    body = decode(ScoreRequest, raw)
    rt: Runtime = request.app.state.runtime
    audit_note = AuditNote()
    call = scoring.ScoreCall(model=model, purpose=body.purpose, keys=body.keys, body=as_sent(raw))
    try:
        event = allowed_event(request)
        if scoring.scores_in_memory(rt, model):
            prepared = scoring.prepare_scoring(rt, who, event, call, audit_note)
        else:  # an index to build or DuckDB lookups: off the event loop
            prepared = await asyncio.to_thread(scoring.prepare_scoring, rt, who, event, call, audit_note)
        build = functools.partial(_built, scoring.pending_scoring, rt, prepared)
        admission, pending, seq = await rt.releases.admit_and_log(prepared.admission, now=prepared.now, build=build)
    finally:
        note(request, service=audit_note.service, subjects=audit_note.subjects)
    return released_response(request, pending.complete(rt, seq), rate_limit_headers(admission.windows))


def _built(
    pending_of: Callable[[Runtime, Prepared, Admission], PendingRelease],
    rt: Runtime,
    prepared: Prepared,
    admission: Admission,
) -> tuple[PendingRelease, AuditEvent]:
    """The release as admitted, and its leaf (from the admission's answers and repeats only: the
    store may build it before its locks, on the admission it presumes)."""
    pending = pending_of(rt, prepared, admission)
    return pending, pending.leaf


_PATHS: tuple[tuple[re.Pattern[str], str, str, Handler], ...] = (
    (_VERIFY, "/v1/verify/{service}", "service", verify),
    (_SCORE, "/v1/models/{model}/score", "model", score),
)


@dataclass(frozen=True, slots=True)
class MatchedRoute:
    """What `scope["route"]` says of a request served here: its template, as FastAPI's route would."""

    path: str


class HotPaths:
    """ASGI: the hot POSTs answered here, everything else passed on to `app`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._routes = {template: MatchedRoute(template) for _p, template, _n, _h in _PATHS}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"].startswith(("/v1/verify/", "/v1/models/"))
        ):
            for pattern, template, parameter, handler in _PATHS:
                matched = pattern.fullmatch(scope["path"])
                if matched is not None:
                    scope["path_params"] = {parameter: matched.group(1)}
                    await self._serve(scope, receive, send, template=template, handler=handler)
                    return
        await self.app(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, *, template: str, handler: Handler) -> None:
        app: FastAPI = scope["app"]
        scope["route"] = self._routes[template]  # the audit event and the metrics name its template
        request = Request(scope, receive)
        ((parameter, value),) = scope["path_params"].items()
        try:
            if _NAME.fullmatch(value) is None:  # as FastAPI checks the declared path parameter
                loc = ("path", parameter)
                raise RequestValidationError(
                    [
                        {
                            "loc": loc,
                            "msg": f"String should match pattern '{NAME_PATTERN}'",
                            "type": "string_pattern_mismatch",
                        }
                    ]
                )
            response = await handler(request, value)
        except Exception as exc:
            render = next((app.exception_handlers[k] for k in type(exc).__mro__ if k in app.exception_handlers), None)
            if render is None:  # not a refusal: the request middleware answers 500 and logs it
                raise
            response = await render(request, exc)  # type: ignore[misc]
        await response(scope, receive, send)
