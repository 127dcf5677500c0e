"""`veilgate usage report` and `veilgate disclosure report`: statements and the annual disclosure."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from gateway.cli.installation import ConfigOption, runtime
from gateway.services import disclosure_report, metering

__all__ = ["disclosure_app", "usage_app"]

usage_app = typer.Typer(help="Usage and fees.", no_args_is_help=True)
disclosure_app = typer.Typer(help="Public disclosure.", no_args_is_help=True)


@usage_app.command("report")
def usage_report_command(
    since: Annotated[datetime, typer.Option(formats=["%Y-%m-%d"], help="First UTC day.")],
    until: Annotated[datetime, typer.Option(formats=["%Y-%m-%d"], help="Last UTC day.")],
    config: ConfigOption = None,
) -> None:
    """Every consumer's statement for a period, as JSON: calls, claims, billable claims, fees."""
    with runtime("usage report", config) as rt:
        report = metering.statement(rt, since.date(), until.date())
    sys.stdout.write(json.dumps(report, indent=2, ensure_ascii=False) + "\n")


@disclosure_app.command("report")
def disclosure_report_command(
    year: Annotated[int, typer.Option(min=2000, max=2100, help="The calendar year.")],
    out: Annotated[Path, typer.Option(help="Directory for disclosure-YEAR.json and disclosure-YEAR.md.")] = Path("."),
    config: ConfigOption = None,
) -> None:
    """The annual disclosure report, as JSON and as a readable document."""
    with runtime("disclosure report", config) as rt:
        report = disclosure_report.build(rt, year)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"disclosure-{year}.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (out / f"disclosure-{year}.md").write_text(disclosure_report.markdown(report))
    typer.echo(f"wrote {out / f'disclosure-{year}.json'} and {out / f'disclosure-{year}.md'}")
