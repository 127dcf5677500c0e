"""`veilgate policy ...`: check a bundle, propose a reload, roll back."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated

import typer

from gateway.catalog import CatalogStore
from gateway.cli.console import console, fail
from gateway.cli.installation import ConfigOption, runtime, settings_for
from gateway.services import policy_admin, policy_check

__all__ = ["app"]

app = typer.Typer(help="The policy bundle: check, propose a reload, roll back.", no_args_is_help=True)


@app.command("check")
def policy_check_command(
    directory: Annotated[Path, typer.Argument(help="The bundle's directory.")],
    config: ConfigOption = None,
) -> None:
    """Validate a bundle completely, against itself and the catalogue; print every error with file and line."""
    settings = settings_for(config)
    catalog = CatalogStore(settings.data_path)
    bundle, errors = policy_check.check(directory, catalog, policy_approvals=settings.policy_approvals)
    for error in errors:
        console.print(f"[red]{error}[/red]", highlight=False)
    if bundle is None:
        fail(f"the bundle in {directory} has {len(errors)} error(s)")
    typer.echo(
        f"bundle {bundle.version}: {len(bundle.verification_services)} verification service(s), "
        f"{len(bundle.aggregate_templates)} aggregate template(s), {len(bundle.models)} model(s), "
        f"{len(bundle.job_services)} job service(s), "
        f"{len(bundle.grants)} grant(s), {len(bundle.consumers)} consumer(s)"
    )


@app.command("reload")
def policy_reload_command(config: ConfigOption = None) -> None:
    """Propose the YAML bundle of `policy_dir`, after the same checks (a running server does the
    same on SIGHUP): in force once an administrator approves it (at once with
    `policy_approvals = 1`); a bundle that fails changes nothing."""
    with runtime("policy reload", config) as rt:
        change = policy_admin.reload_from_disk(rt, by=f"cli:{getpass.getuser()}")
    if change.active is not None:
        typer.echo(f"bundle {change.active} in force")
    elif change.proposal is not None:
        typer.echo(
            f"bundle {change.proposal['version']} proposed as {change.proposal['id']}: in force once an "
            f"administrator approves it (POST /v1/admin/policy/proposals/{change.proposal['id']}/approve)"
        )


@app.command("rollback")
def policy_rollback_command(config: ConfigOption = None) -> None:
    """Propose the bundle that was in force before the current one: in force once administrators
    of two identities approve it (the command line is nobody's approval), refused if anything
    else goes in force first."""
    with runtime("policy rollback", config) as rt:
        change = policy_admin.propose_rollback(rt, by=f"cli:{getpass.getuser()}")
    if change.proposal is not None:
        typer.echo(
            f"rollback to bundle {change.proposal['version']} proposed as {change.proposal['id']}: in force once "
            f"administrators approve it (POST /v1/admin/policy/proposals/{change.proposal['id']}/approve)"
        )
