"""`veilgate budget stale`: what crashed requests left in the budget ledger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from gateway.cli.host_audit import host_change
from gateway.cli.installation import ConfigOption, runtime

__all__ = ["app"]

app = typer.Typer(help="Privacy budgets.", no_args_is_help=True)


@app.command("stale")
def budget_stale(
    older_than_minutes: Annotated[
        int, typer.Option(min=1, help="Older than this, a reservation's request is over (longer than any query).")
    ] = 60,
    settle: Annotated[
        bool,
        typer.Option(
            help="Give back reservations that read no data, commit the others; drop holds, free idempotency keys."
        ),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """What crashed requests left (reservations, release holds, running idempotency keys): listed, or settled."""
    cutoff = (datetime.now(UTC) - timedelta(minutes=older_than_minutes)).isoformat()
    with runtime("stale reservations", config) as rt, host_change(rt.settings, "budget stale --settle") as record:
        stale = rt.budget.stale(cutoff)
        for found in stale:
            eps = found.amount.epsilon
            typer.echo(f"{found.id}\t{found.state}\tepsilon {eps}\t{found.created}\t{','.join(found.accounts)}")
        held = rt.budget.stale_holds(cutoff)
        for entry in held:
            typer.echo(f"{entry.kind}\t{entry.name}\t{entry.created}")
        if settle:
            returned, committed = rt.budget.settle_stale(cutoff)
            holds, keys = rt.budget.settle_stale_holds(cutoff)
            settled = {"before": cutoff, "returned": returned, "committed": committed, "holds": holds, "keys": keys}
            record(settled)
            typer.echo(f"given back (no data read): {returned}; committed (data read, the charge stays): {committed}")
            typer.echo(f"holds dropped: {holds}; idempotency keys freed: {keys}")
        elif stale or held:
            typer.echo(
                f"{len(stale)} stale reservation(s), {len(held)} hold(s) or running key(s); "
                "--settle gives back reservations that read no data, commits the others, and frees the rest"
            )
