"""`veilgate database import`: move an installation's files into PostgreSQL."""

from __future__ import annotations

import typer

from gateway.cli.console import guard
from gateway.cli.installation import ConfigOption, settings_for
from gateway.services import database_import

__all__ = ["app"]

app = typer.Typer(help="The PostgreSQL database that replicas share.", no_args_is_help=True)


@app.command("import")
def database_import_command(config: ConfigOption = None) -> None:
    """Move this installation's history from its files into `database_dsn`, before replicas start there."""
    settings = settings_for(config)
    with guard("import"):
        imported = database_import.import_installation(settings)
    for step in imported:
        typer.echo(f"{step.store}: " + ("it already holds data; nothing copied" if step.copied is None
                                        else f"{step.copied} copied"))  # fmt: skip
