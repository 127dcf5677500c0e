"""OpenTelemetry tracing, off unless `tracing = true`: one span per request.

Off, nothing here is imported and no middleware is added, so it costs nothing. On, it needs the
`tracing` extra (`pip install 'veilgate[tracing]'`, the OpenTelemetry API and SDK) and uses the
process's tracer provider: the operator configures where spans go the usual way (for example
`opentelemetry-instrument veilgate serve` with the `OTEL_*` variables), or a test passes its own.

SECURITY: a span holds the method, the route template, the status and the request id; never the
raw path (OpenTelemetry's `url.path`), the query, a header or a body, which a caller controls.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import ConfigurationError


def without_native_telemetry() -> dict[str, Any]:
    """FastAPI's own OpenTelemetry spans, metrics and logs, off (FastAPI from 0.16x has them, on
    as soon as the process has a tracer provider): they record the raw path and query as
    `url.path` and `url.query`, which may hold a person's key. `RequestSpans` traces instead."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


class RequestSpans:
    """Pure ASGI: a server span around each HTTP request, named `METHOD /route/{template}`."""

    def __init__(self, app: ASGIApp, *, tracer_provider: Any = None) -> None:
        try:
            trace = importlib.import_module("opentelemetry.trace")
        except ImportError as exc:
            raise ConfigurationError("tracing = true needs OpenTelemetry: pip install 'veilgate[tracing]'") from exc
        self.app = app
        self._kind = trace.SpanKind.SERVER
        self._error = trace.Status(trace.StatusCode.ERROR)
        self._tracer = trace.get_tracer("veilgate", tracer_provider=tracer_provider)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = str(scope.get("method", ""))
        with self._tracer.start_as_current_span(method, kind=self._kind) as span:
            status = 500

            async def send_traced(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await self.app(scope, receive, send_traced)
            finally:
                route = getattr(scope.get("route"), "path", None)
                route = route if isinstance(route, str) else "(unmatched)"
                span.update_name(f"{method} {route}")
                span.set_attribute("http.request.method", method)
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                state = scope.get("state") or {}
                request_id = state.get("request_id") if isinstance(state, dict) else None
                if isinstance(request_id, str):
                    span.set_attribute("veilgate.request_id", request_id)
                if status >= 500:
                    span.set_status(self._error)
