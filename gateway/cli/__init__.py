"""The `veilgate` command line. Thin: each command calls one service or leaf.

One module per command group; this one assembles the tree, so the whole command line reads in
one place. Commands never import each other; what they share is in `console` (messages,
progress) and `installation` (which configuration, which stores)."""

from __future__ import annotations

import typer

from gateway.cli import (
    audit,
    budget,
    catalogue,
    clients,
    database,
    demo,
    freezes,
    jobs,
    keys,
    policy,
    receipt,
    reports,
    server,
)

__all__ = ["app"]

app = typer.Typer(help="Veilgate: answers about public data, never the records.", no_args_is_help=True)

app.command("demo-data")(demo.demo_data_command)
app.command("register")(catalogue.register)
app.command("deregister")(catalogue.deregister)
app.command("token")(keys.token)
app.command("doctor")(server.doctor_command)
app.command("serve")(server.serve)
app.command("worker")(server.worker_command)
app.command("tracker")(audit.tracker_command)
app.command("freeze")(freezes.freeze_command)
app.command("unfreeze")(freezes.unfreeze_command)

app.add_typer(keys.app, name="keys")
app.add_typer(receipt.app, name="receipt")
app.add_typer(audit.app, name="audit")
app.add_typer(policy.app, name="policy")
app.add_typer(reports.usage_app, name="usage")
app.add_typer(budget.app, name="budget")
app.add_typer(database.app, name="database")
app.add_typer(reports.disclosure_app, name="disclosure")
app.add_typer(jobs.app, name="jobs")
app.add_typer(clients.app, name="clients")
app.add_typer(demo.app, name="demo")
