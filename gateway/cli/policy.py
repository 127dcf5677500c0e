"""`veilgate policy ...`: check a bundle, propose a reload, roll back, reject or withdraw a proposal."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gateway.catalog import CatalogStore
from gateway.cli.console import console, fail
from gateway.cli.host_audit import host_change, host_user
from gateway.cli.installation import ConfigOption, runtime, settings_for
from gateway.services import policy_admin, policy_check

__all__ = ["app"]

app = typer.Typer(
    help="The policy bundle: check, propose a reload, roll back, reject or withdraw a proposal.", no_args_is_help=True
)
ReasonOption = Annotated[str, typer.Option("--reason", help="Why: kept in the policy history.")]


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
    with runtime("policy reload", config) as rt, host_change(rt.settings, "policy reload") as record:
        change = policy_admin.reload_from_disk(rt, by=host_user())
        record({"proposal": change.proposal, "active": change.active})
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
    with runtime("policy rollback", config) as rt, host_change(rt.settings, "policy rollback") as record:
        change = policy_admin.propose_rollback(rt, by=host_user())
        record({"proposal": change.proposal, "active": change.active})
    if change.proposal is not None:
        typer.echo(
            f"rollback to bundle {change.proposal['version']} proposed as {change.proposal['id']}: in force once "
            f"administrators approve it (POST /v1/admin/policy/proposals/{change.proposal['id']}/approve)"
        )


def _decide(action: str, proposal_id: str, reason: str, config: Path | None) -> None:
    if not reason.strip() or len(reason) > 500:
        fail("--reason: between 1 and 500 characters")
    with runtime(f"policy {action}", config) as rt, host_change(rt.settings, f"policy {action}") as record:
        decide = policy_admin.reject if action == "reject" else policy_admin.withdraw
        closed = decide(rt, proposal_id, by=host_user(), reason=reason).proposal
        record({"proposal": closed})
    typer.echo(f"proposal {proposal_id} (bundle {closed['version']}) {closed['outcome']}: it can never be approved")


@app.command("reject")
def policy_reject_command(
    proposal_id: Annotated[str, typer.Argument(help="The proposal's id (GET /v1/admin/policy).")],
    reason: ReasonOption,
    config: ConfigOption = None,
) -> None:
    """Turn down an open proposal for good, with a reason kept in the history: taking a change
    off the table needs no second person. A proposal this command line made is withdrawn instead."""
    _decide("reject", proposal_id, reason, config)


@app.command("withdraw")
def policy_withdraw_command(
    proposal_id: Annotated[str, typer.Argument(help="The proposal's id (GET /v1/admin/policy).")],
    reason: ReasonOption,
    config: ConfigOption = None,
) -> None:
    """Take back, for good, a proposal this command line made (`policy reload`, `policy rollback`
    by the same user)."""
    _decide("withdraw", proposal_id, reason, config)
