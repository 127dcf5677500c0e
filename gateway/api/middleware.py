"""ASGI middleware: a request id on every exchange, and a hard cap on body size.

Pure ASGI (no BaseHTTPMiddleware) so it adds microseconds, not a task per request.
"""

from __future__ import annotations

import json
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api.problems import problem_body, unexpected_error
from gateway.errors import PayloadTooLarge, VeilgateError


class _TooLarge(Exception):
    pass


class RequestContext:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            await self._too_large(send, request_id)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _TooLarge
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_id)
        except _TooLarge:
            if not started:
                await self._too_large(send, request_id)
        except Exception as exc:  # the last line of defence: a bare 500, the cause only in the log
            error = unexpected_error(request_id, exc)
            if not started:
                await self._send_problem(send, request_id, error)

    async def _too_large(self, send: Send, request_id: str) -> None:
        await self._send_problem(
            send, request_id, PayloadTooLarge(f"the request body exceeds {self.max_body_bytes} bytes")
        )

    async def _send_problem(self, send: Send, request_id: str, error: VeilgateError) -> None:
        body = json.dumps(problem_body(error, request_id)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": error.status,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-request-id", request_id.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
