"""The outermost ASGI middleware: every request counted and timed, whichever app answered it.

Pure ASGI, so that it costs a few microseconds and sees routes that never reach FastAPI's router
as well. It reads what inner layers leave in the scope once the response is done: the route that
matched (`scope["route"]`, whose `path` is the template, as the audit event records it; an ASGI
route outside FastAPI sets the same) and the problem type a refusal carried (`state["problem"]`).
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.observability.metrics import observe_request


class RequestMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an app that raises before it answers: what the server will send

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            state = scope.get("state") or {}
            observe_request(
                str(scope.get("method", "")),
                getattr(scope.get("route"), "path", None),
                status,
                time.perf_counter() - started,
                state.get("problem") if isinstance(state, dict) else None,
            )
