"""`veilgate clients ...`: client accounts for OAuth2 client credentials."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from gateway.cli.console import fail, guard
from gateway.cli.host_audit import host_change
from gateway.cli.installation import ConfigOption, account_store, settings_for
from gateway.domain.principal import Role
from gateway.state.ports import PRIVILEGED

__all__ = ["app"]

app = typer.Typer(help="Client accounts for OAuth2 client credentials.", no_args_is_help=True)


@app.command("add")
def clients_add(
    client_id: str,
    org: Annotated[str, typer.Option(help="The client's organisation.")],
    role: Annotated[list[Role], typer.Option(help="Repeat for several roles.")],
    person: Annotated[str | None, typer.Option(help="Who holds it: two approvals need two people.")] = None,
    config: ConfigOption = None,
) -> None:
    """Create a client; its secret is printed once and stored only as a hash. Privileged roles
    only while setting up (fewer administrators than `policy_approvals`): after that, through
    `POST /v1/admin/consumers` and a second administrator's approval."""
    settings = settings_for(config, creating=True)
    with host_change(settings, "clients add") as record, guard("client creation"), account_store(settings) as clients:
        admins = {a.identity for a in clients.all() if Role.ADMIN in a.roles and not a.disabled}
        if PRIVILEGED & set(role) and len(admins) >= max(1, settings.policy_approvals):
            fail("privileged roles are granted through POST /v1/admin/consumers and a second administrator's approval")
        secret = clients.add(client_id, org, role, person=person)
        # printed first, once: the secret is recorded nowhere, and lost if a failed leaf ended the command
        typer.echo(json.dumps({"client_id": client_id, "client_secret": secret}))
        record({"client_id": client_id, "organisation": org, "roles": sorted(r.value for r in role), "person": person})


@app.command("disable")
def clients_disable(client_id: str, config: ConfigOption = None) -> None:
    """Disable a client: its tokens stop working on the next request. Not the last administrators:
    no change leaves fewer than `policy_approvals` (by person), here as through the API."""
    settings = settings_for(config)
    with host_change(settings, "clients disable") as record, guard("disabling"), account_store(settings) as clients:
        clients.disable(client_id, approvals_required=settings.policy_approvals)
        record({"client_id": client_id})
    typer.echo(f"{client_id}: disabled")


@app.command("list")
def clients_list(config: ConfigOption = None) -> None:
    settings = settings_for(config)
    with account_store(settings) as clients:
        accounts = clients.all()
    for c in accounts:
        roles = ",".join(sorted(r.value for r in c.roles))
        state = "disabled" if c.disabled else "enabled"
        typer.echo(f"{c.client_id}\t{c.organisation}\t{c.person or '-'}\t{roles}\t{state}")
