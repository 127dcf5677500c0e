"""`veilgate jobs run-local`: a job on the synthetic sample, before it is submitted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from gateway.catalog import CatalogStore
from gateway.cli.console import console, fail
from gateway.cli.installation import ConfigOption, settings_for
from gateway.errors import InvalidRequest, VeilgateError
from gateway.policy import load_bundle
from gateway.services import jobs as jobs_service

__all__ = ["app"]

app = typer.Typer(help="Approved analysis code.", no_args_is_help=True)


@app.command("run-local")
def jobs_run_local(
    code: Annotated[Path, typer.Argument(help="The job's Python file.", exists=True, dir_okay=False)],
    *,
    service: Annotated[str, typer.Option(help="The job service it will be submitted under.")],
    dataset: Annotated[list[str], typer.Option(help="A dataset the job reads (repeat for several).")],
    output: Annotated[list[str] | None, typer.Option(help="A DP output the job declares (repeat for several).")] = None,
    tables: Annotated[
        Path | None,
        typer.Option(
            help="SDC services: a JSON file with the declared tables, as `tables` of a submission.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    rows: Annotated[int, typer.Option(min=1, max=100_000, help="Rows of the synthetic sample.")] = 1000,
    config: ConfigOption = None,
) -> None:
    """Run a job on the synthetic sample of its datasets, with the job API and the output checks
    of the domain, and print the outcome in the shape the gateway releases it."""
    settings = settings_for(config)
    try:
        bundle = load_bundle(settings.policy_dir)
        catalog = CatalogStore(settings.data_path)
        entries = [catalog.get(name).entry for name in dataset]
        try:
            declared = None if tables is None else json.loads(tables.read_text())
        except ValueError:
            raise InvalidRequest("--tables: not a JSON file") from None
        outcome = jobs_service.run_local(
            bundle, service, entries, code.read_text(), list(output or []), rows=rows,
            work_dir=settings.state_dir / "jobs" / "local", tables=declared,
        )  # fmt: skip
    except VeilgateError as exc:
        fail(str(exc))
    console.print("[dim]synthetic sample made from the catalogue alone; run without isolation[/dim]")
    typer.echo(json.dumps(outcome, indent=2, ensure_ascii=False, default=str))
    if not outcome["completed"]:
        raise typer.Exit(1)
