"""create_app(settings): the one place where everything is wired together."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gateway import __version__
from gateway.api import problems
from gateway.api.middleware import RequestContext
from gateway.api.routes import account, admin, public
from gateway.services.runtime import Runtime
from gateway.settings import Settings

log = logging.getLogger("veilgate")


def create_app(settings: Settings, *, runtime: Runtime | None = None) -> FastAPI:
    """Build the ASGI app; opening the runtime fails fast with a message that says what to fix."""
    rt = runtime or Runtime.open(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        rt.close()

    app = FastAPI(
        title="Veilgate",
        version=__version__,
        description="Answers about public data, never the records: verification, DP aggregates and "
        "approved models, every result signed and every request audited.",
        lifespan=lifespan,
    )
    app.state.runtime = rt
    app.state.settings = settings
    problems.install(app)
    for router in (public.router, account.router, admin.router):
        app.include_router(router)
    app.add_middleware(RequestContext, max_body_bytes=settings.max_body_bytes)
    return app
