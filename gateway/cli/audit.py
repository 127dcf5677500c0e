"""`veilgate audit ...` (verify, export, checkpoint, witness) and `veilgate tracker`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from gateway.cli.console import console, fail, guard, progress
from gateway.cli.installation import ConfigOption, audit_log, runtime, settings_for
from gateway.services import audit_trail, receipts, tracker
from gateway.signing import KeyRing

__all__ = ["app", "tracker_command"]

app = typer.Typer(help="The audit log: verify, export, checkpoint, witness.", no_args_is_help=True)


@app.command("verify")
def audit_verify(
    config: ConfigOption = None,
    witness_file: Annotated[
        list[Path] | None, typer.Option("--witness", help="A checkpoint JWS a witness kept (repeatable).")
    ] = None,
    jwks: Annotated[
        str | None, typer.Option(help="Published keys (file or URL); default: this installation's.")
    ] = None,
) -> None:
    """Check every leaf, the tree, every checkpoint and their consistency; name the first bad record."""
    settings = settings_for(config)
    with guard("audit verification"):
        keys = receipts.load_jwks(jwks) if jwks else KeyRing.load(settings.receipt_keys_dir).jwks()
        log = audit_log(settings)
        witnessed = [p.read_text().strip() for p in witness_file or []]
        try:
            with progress(transient=True) as bar:
                task = bar.add_task("leaves", total=log.size())
                report = audit_trail.verify_log(log, keys, witnessed=witnessed, progress=lambda n: bar.advance(task, n))
        finally:
            log.close()
    if not report.ok:
        fail(f"the audit log does not verify: {report.failure}")
    typer.echo(
        f"audit log verified: leaves {report.leaves}, checkpoints {report.checkpoints}, "
        f"witnessed checkpoints {report.witnessed}"
    )


@app.command("export")
def audit_export(
    out: Annotated[Path, typer.Option(help="JSON lines file to write; - for stdout.")],
    config: ConfigOption = None,
) -> None:
    """Write every leaf as one JSON line, exactly the bytes that are hashed into the tree."""
    settings = settings_for(config)
    log = audit_log(settings)
    try:
        handle = sys.stdout.buffer if str(out) == "-" else out.open("wb")
        with progress(transient=True) as bar:
            task = bar.add_task("leaves", total=log.size())
            for row in log.stored():
                handle.write(row.record + b"\n")
                bar.advance(task)
        handle.flush()
        if handle is not sys.stdout.buffer:
            handle.close()
    finally:
        log.close()


@app.command("checkpoint")
def audit_checkpoint(config: ConfigOption = None) -> None:
    """Sign a checkpoint of the log now, if it grew since the last one."""
    settings = settings_for(config)
    with guard("checkpoint"):
        log = audit_log(settings)
        try:
            keys = KeyRing.load(settings.receipt_keys_dir)
            kept = settings.audit_dir / audit_trail.SIGNED_HEAD_FILE
            made = audit_trail.make_checkpoint(log, keys, issuer=settings.issuer, kept=kept)
        finally:
            log.close()
    typer.echo(f"checkpoint signed: {made.size} leaves" if made else "the log has not grown since the last checkpoint")


@app.command("witness")
def audit_witness(
    url: Annotated[str, typer.Argument(help="The gateway's base URL, e.g. https://gateway.example.org")],
    store: Annotated[Path, typer.Option(help="File where this witness keeps the newest checkpoint it saw.")],
) -> None:
    """Check that the gateway's newest checkpoint extends the one kept from the last run, then keep it."""
    kept = store.read_text().strip() if store.is_file() else None
    with guard("witnessing"):
        report = audit_trail.witness(url, kept)
    if report.latest is None or report.checkpoint is None:
        typer.echo("the gateway has published no checkpoint yet")
        return
    store.write_text(report.checkpoint + "\n")
    start = f"extends the kept checkpoint of {report.previous.size} leaves" if report.previous else "first seen"
    typer.echo(f"checkpoint of {report.latest.size} leaves at {report.latest.time}: {start}; kept in {store}")


def tracker_command(
    key: Annotated[str, typer.Argument(help="The credit code or resident id; - reads it from stdin.")],
    config: ConfigOption = None,
) -> None:
    """Who asked about this key, when and under which grant, from the audit log's keyed hashes."""
    value = sys.stdin.readline().strip() if key == "-" else key
    with runtime("tracker", config) as rt:
        rows = tracker.track(rt, value)
    for row in rows:
        typer.echo(
            f"{row['time']}  {row['consumer'] or '-':20} {row['service'] or '-':26} "
            f"grant {row['grant'] or '-':24} {row['decision']} ({row['status']})  leaf {row['seq']}"
        )
    console.print(f"{len(rows)} request(s) about this key")
