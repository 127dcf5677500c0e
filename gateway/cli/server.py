"""`veilgate serve`, `veilgate worker` and `veilgate doctor`: running an installation."""

from __future__ import annotations

import os
from typing import Annotated

import typer
import uvicorn

from gateway.app import create_app
from gateway.cli.console import console, guard
from gateway.cli.installation import ConfigOption, runtime, settings_for
from gateway.http_server import available_cores, server_options
from gateway.observability.logs import log_config
from gateway.observability.metrics import shared_by_workers
from gateway.services import doctor

__all__ = ["doctor_command", "serve", "worker_command"]


def doctor_command(config: ConfigOption = None) -> None:
    """Check an installation and say what to fix."""
    settings = settings_for(config)
    findings = doctor.diagnose(settings)
    for f in findings:
        mark = "[green]ok[/green]  " if f.ok else "[red]FAIL[/red]"
        console.print(f"{mark} {f.check}: {f.message}")
    if not all(f.ok for f in findings):
        raise typer.Exit(1)


def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Overrides the config.")] = None,
    port: Annotated[int | None, typer.Option(help="Overrides the config.")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, max=64, help="Worker processes (they share the state); default: one per core.")
    ] = None,
) -> None:
    """Serve the gateway with uvicorn (uvloop, httptools), one worker process per core by default."""
    settings = settings_for(config)
    with guard("startup"):
        application = create_app(settings)  # fails fast, with a message, before any worker starts
    bind = server_options(host or settings.host, port or settings.port)
    if settings.log_format == "json":
        bind["log_config"] = log_config()
    workers = workers or available_cores()
    if workers == 1:
        uvicorn.run(application, **bind)
        return
    application.state.runtime.close()
    if config is not None:
        os.environ["VEILGATE_CONFIG"] = str(config.resolve())
    with shared_by_workers():  # each worker's metrics in files, so any worker's /metrics sums them all
        uvicorn.run("gateway.app:app_from_environment", factory=True, workers=workers, **bind)


def worker_command(
    config: ConfigOption = None,
    poll: Annotated[float, typer.Option(min=0.1, max=60, help="Seconds between looks at the job store.")] = 0.5,
) -> None:
    """Run approved jobs in their jails: the only process that runs jobs, and the one that needs
    the privileges for it (root, or CAP_SETUID, CAP_SETGID, CAP_CHOWN and CAP_KILL)."""
    import logging  # noqa: PLC0415
    import signal  # noqa: PLC0415
    import threading  # noqa: PLC0415

    from gateway.services import job_worker  # noqa: PLC0415

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda _n, _f: stop.set())
    with runtime("worker", config) as rt, job_worker.lock(rt):
        job_worker.serve(rt, stop=stop, poll_seconds=poll)
