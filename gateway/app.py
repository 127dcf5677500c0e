"""create_app(settings): the one place where everything is wired together."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from gateway import __version__, console
from gateway.api import problems
from gateway.api.hot_paths import HotPaths
from gateway.api.middleware import RequestContext
from gateway.api.routes import (
    account,
    admin,
    aggregate,
    audit,
    disclosure,
    jobs,
    metrics,
    models,
    objections,
    output_checks,
    policy,
    public,
    usage,
    verify,
)
from gateway.background import Housekeeping
from gateway.domain.trail import AuditEvent
from gateway.observability.requests import RequestMetrics
from gateway.observability.tracing import RequestSpans, without_native_telemetry
from gateway.services.runtime import Runtime
from gateway.services.token_throttle import Rate, TokenThrottle
from gateway.settings import Settings, load_settings


def create_app(settings: Settings, *, runtime: Runtime | None = None) -> FastAPI:
    """Build the ASGI app; opening the runtime fails fast with a message that says what to fix."""
    rt = runtime or Runtime.open(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            async with Housekeeping(rt).running():
                yield
        finally:  # off the loop: a batch still in flight on it must be able to end while the stores close
            await asyncio.to_thread(rt.close)

    async def record(event: AuditEvent) -> int:
        return await rt.audit.append_async(event)

    app = FastAPI(
        title="Veilgate",
        version=__version__,
        description="Answers about public data, never the records: verification, DP aggregates and "
        "approved models, every result signed and every request audited.",
        lifespan=lifespan,
        docs_url=None,  # served by the console, offline
        redoc_url=None,
        **without_native_telemetry(),  # it would trace raw paths
    )
    app.state.runtime = rt
    app.state.settings = settings
    app.state.token_throttle = TokenThrottle(
        per_client=Rate(settings.token_attempts_per_client),
        per_address=Rate(settings.token_attempts_per_address),
        overall=Rate(settings.token_attempts_overall),
    )
    problems.install(app)
    # Matched in this order: the hot paths of consumers first.
    routers = (
        public, verify, models, aggregate, account, usage, jobs, output_checks, disclosure, objections, audit, admin,
        policy, metrics,
    )  # fmt: skip
    for module in routers:
        app.include_router(module.router)
    console.install(app)
    app.add_middleware(HotPaths)  # inside RequestContext: verification and scoring without FastAPI routing
    app.add_middleware(RequestContext, max_body_bytes=settings.max_body_bytes, record=record)
    if settings.tracing:  # off: OpenTelemetry is not even imported
        app.add_middleware(RequestSpans)
    app.add_middleware(RequestMetrics)  # added last: the outermost, it counts every request
    return app


def app_from_environment() -> FastAPI:
    """For `veilgate serve --workers N`: each worker process builds its app from `VEILGATE_CONFIG`."""
    config = os.environ.get("VEILGATE_CONFIG")
    return create_app(load_settings(Path(config) if config else None))
