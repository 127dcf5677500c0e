"""`veilgate demo-data` and `veilgate demo setup`: the synthetic demo data domain."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from gateway import demo_data
from gateway.cli.console import console, data_progress, guard, progress
from gateway.services import demo_setup as demo_service

__all__ = ["app", "demo_data_command"]

app = typer.Typer(help="The demo data domain.", no_args_is_help=True)


def demo_data_command(
    out: Annotated[Path, typer.Option(help="Directory for the Parquet files and catalogue entries.")],
    scale: Annotated[float, typer.Option(min=0.001, help="1 = 10k enterprises, ~400k contribution rows.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Same seed, same bytes.")] = 20261128,
    canary: Annotated[str | None, typer.Option(help="Plant this string in raw values (leak tests).")] = None,
) -> None:
    """Generate deterministic synthetic public data for the demo domain."""
    with progress() as bar:
        summary = demo_data.generate(out, scale=scale, seed=seed, canary=canary, progress=data_progress(bar))
    for name, rows in summary.rows.items():
        console.print(f"{name}: {rows:,} rows -> {summary.files[name]}")


@app.command("setup")
def demo_setup_command(
    directory: Annotated[Path, typer.Option("--dir", help="Demo directory.")] = Path(".demo"),
    policy_dir: Annotated[Path, typer.Option(help="Policy bundle the demo serves.")] = Path("policies"),
    scale: Annotated[float, typer.Option(min=0.001)] = 1.0,
    port: Annotated[int, typer.Option(help="Port the tour's requests use.")] = 8000,
) -> None:
    """Generate, register and configure the demo data domain; print the tour."""
    with guard("demo setup"), progress() as bar:
        result = demo_service.setup(
            directory, policy_dir, scale=scale, say=console.print, data_progress=data_progress(bar)
        )
    sys.stdout.write(demo_service.tour(result, f"http://127.0.0.1:{port}") + "\n")
