"""`veilgate freeze` and `veilgate unfreeze`: emergency stops that work without the API."""

from __future__ import annotations

from typing import Annotated

import typer

from gateway.cli.console import guard
from gateway.cli.host_audit import host_change, host_user
from gateway.cli.installation import ConfigOption, freeze_store, settings_for
from gateway.domain.policy import FreezeKind

__all__ = ["freeze_command", "unfreeze_command"]


def freeze_command(
    kind: Annotated[FreezeKind, typer.Argument(help="What to stop.")],
    name: Annotated[str, typer.Argument(help="Client id, organisation, dataset or service name.")],
    reason: Annotated[str, typer.Option(help="Why; recorded and shown to those refused.")],
    config: ConfigOption = None,
) -> None:
    """Emergency stop, effective on the next request of every gateway process; works without the API."""
    settings = settings_for(config)
    with host_change(settings, "freeze", emergency=True) as record, guard("freeze"), freeze_store(settings) as store:
        made = store.freeze(kind, name, by=host_user(), reason=reason)
        record({"kind": made.kind.value, "name": made.name, "since": made.since.isoformat(), "reason": reason})
    typer.echo(f"{made.kind.value} {made.name} frozen since {made.since.isoformat()}")


def unfreeze_command(
    kind: Annotated[FreezeKind, typer.Argument(help="What to resume.")],
    name: Annotated[str, typer.Argument(help="Client id, organisation, dataset or service name.")],
    reason: Annotated[str, typer.Option(help="Why; recorded in the history.")],
    config: ConfigOption = None,
) -> None:
    """Lift a freeze."""
    settings = settings_for(config)
    with host_change(settings, "unfreeze") as record, guard("unfreeze"), freeze_store(settings) as store:
        store.unfreeze(kind, name, by=host_user(), reason=reason)
        record({"kind": kind.value, "name": name, "reason": reason})
    typer.echo(f"{kind.value} {name} no longer frozen")
