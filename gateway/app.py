"""create_app(settings): the one place where everything is wired together."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
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
from gateway.domain.trail import AuditEvent
from gateway.errors import VeilgateError
from gateway.observability.requests import RequestMetrics
from gateway.observability.tracing import RequestSpans, without_native_telemetry
from gateway.services import policy_admin, scoring, verification
from gateway.services.audit_trail import make_checkpoint
from gateway.services.runtime import Runtime
from gateway.services.token_throttle import Rate, TokenThrottle
from gateway.settings import Settings, load_settings

log = logging.getLogger("veilgate")


def create_app(settings: Settings, *, runtime: Runtime | None = None) -> FastAPI:
    """Build the ASGI app; opening the runtime fails fast with a message that says what to fix."""
    rt = runtime or Runtime.open(settings)

    def checkpoint() -> None:
        made = make_checkpoint(rt.audit, rt.receipt_keys, issuer=settings.issuer)
        if made is not None:
            log.info("audit checkpoint signed: %d leaves", made.size)

    # Jobs are run by `veilgate worker`, never here: this process only records submissions and
    # reviews, and needs no privilege (docs/operations.md).
    async def housekeeping_every_interval() -> None:
        while True:
            await asyncio.sleep(settings.checkpoint_interval_seconds)
            try:
                await asyncio.to_thread(checkpoint)
            except Exception:  # a failed checkpoint is retried next interval; serving goes on
                log.exception("audit checkpoint failed")

    def reload_policy() -> None:
        try:
            change = policy_admin.reload_from_disk(rt, by="sighup")
            if change.active is None and change.proposal is not None:
                log.info("policy reload of %s proposed as %s: in force once approved",
                         settings.policy_dir, change.proposal["id"])  # fmt: skip
            else:
                log.info("policy reloaded from %s: version %s in force", settings.policy_dir, change.active)
        except VeilgateError as exc:  # the last good bundle stays in force
            log.error("policy reload failed, the bundle in force is unchanged: %s", exc.detail)
            rt.ledger.raise_alert("policy_reload_failed", str(settings.policy_dir), exc.detail)

    def warm_up() -> None:
        try:
            services = verification.warm_up(rt) + scoring.warm_up(rt)
            log.info("lookup indexes built for %d services", services)
        except VeilgateError as exc:  # a dataset that cannot be read: /readyz and its requests say so
            log.warning("warm-up stopped: %s", exc.detail)
        # What is alive now (the lookup indexes, the bundle, the libraries) lives as long as the
        # process: frozen, it is left out of every later collection, and full collections pause
        # serving for a few milliseconds instead of 80 (measured under load).
        gc.collect()
        gc.freeze()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not in the main thread
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGHUP, lambda: asyncio.get_running_loop().run_in_executor(None, reload_policy)
            )
        # A head at start covers what the last run logged after its last checkpoint (a crash).
        with contextlib.suppress(Exception):
            await asyncio.to_thread(checkpoint)
        await asyncio.to_thread(warm_up)
        task = asyncio.create_task(housekeeping_every_interval())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            with contextlib.suppress(Exception):  # a last head covers the final requests
                await asyncio.to_thread(checkpoint)
            rt.close()

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
