"""ASGI middleware: a request id on every exchange, a hard cap on body size, and the audit record.

Pure ASGI (no BaseHTTPMiddleware) so it adds microseconds, not a task per request. It is the
one place that sees every response start, its own error responses included, so it is where the
audit event is appended: the response's first byte waits until the leaf is durable, and if the
log cannot take it the response is replaced by a 503 and nothing of it leaves.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api.auditing import AUDITED_AS, RECEIVED_AT, UNAUDITED_PATHS, event_for
from gateway.api.problems import problem_body, unexpected_error
from gateway.domain.trail import AuditEvent, utc_now
from gateway.errors import AuditUnavailable, PayloadTooLarge, VeilgateError
from gateway.observability.logs import REQUEST_ID

Recorder = Callable[[AuditEvent], Awaitable[int]]
log = logging.getLogger("veilgate.api")


class _TooLarge(Exception):
    pass


_OWN_PROBLEM_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
]
"""A JSON problem that no page frames, sniffs or caches, under /console or anywhere."""


class RequestContext:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, record: Recorder) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.record = record

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = secrets.token_hex(16)  # 32 hex digits, as a uuid4 wrote them, at a third of the cost
        REQUEST_ID.set(request_id)  # on every log line of this request (observability.logs)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state[RECEIVED_AT] = utc_now()
        audited = scope.get("path") not in UNAUDITED_PATHS
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            await self._too_large(scope, send, request_id)
            return
        received = 0
        started = withheld = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _TooLarge
            return message

        async def send_audited(message: Message) -> None:
            nonlocal started, withheld
            if withheld:
                return
            if message["type"] == "http.response.start":
                started = True
                if audited and AUDITED_AS not in state and not await self._append(scope, message["status"]):
                    withheld = True
                    state["problem"] = AuditUnavailable.type_slug  # what the metrics count it as
                    await self._send_problem(send, request_id, AuditUnavailable("the request could not be audited"))
                    return
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, limited_receive, send_audited)
        except _TooLarge:
            if not started:
                await self._too_large(scope, send, request_id)
        except Exception as exc:  # the last line of defence: a bare 500, the cause only in the log
            error = unexpected_error(request_id, exc)
            if not started:
                await self._append(scope, error.status, reason=error.type_slug)
                await self._send_problem(send, request_id, error)

    async def _append(self, scope: Scope, status: int, *, reason: str | None = None) -> bool:
        if reason is not None:  # a problem of this middleware's own: the metrics count it too
            scope["state"]["problem"] = reason
        try:
            await self.record(event_for(scope, status, reason=reason))
        except AuditUnavailable:
            log.error("request %s: the audit log refused its record", scope["state"]["request_id"])
            return False
        return True

    async def _too_large(self, scope: Scope, send: Send, request_id: str) -> None:
        error = PayloadTooLarge(f"the request body exceeds {self.max_body_bytes} bytes")
        await self._append(scope, error.status, reason=error.type_slug)
        await self._send_problem(send, request_id, error)

    async def _send_problem(self, send: Send, request_id: str, error: VeilgateError) -> None:
        """A problem of this middleware's own (413, 500, an unaudited response): it answers from
        outside every other layer, the console's headers included, so it carries its own."""
        body = json.dumps(problem_body(error, request_id)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": error.status,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-request-id", request_id.encode()),
                    *_OWN_PROBLEM_HEADERS,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
