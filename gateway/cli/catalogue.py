"""`veilgate register` and `veilgate deregister`: which data files the catalogue serves."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gateway.catalog import CatalogStore
from gateway.cli.console import guard, progress
from gateway.cli.host_audit import host_change
from gateway.cli.installation import ConfigOption, settings_for
from gateway.services import registration

__all__ = ["deregister", "register"]


def register(
    entry: Annotated[Path, typer.Argument(help="Catalogue entry (YAML).")],
    source: Annotated[
        str,
        typer.Option(
            help="Data file, Parquet or CSV; for an entry with engine: spark, Parquet (a path, hdfs:// or s3a://)."
        ),
    ],
    config: ConfigOption = None,
    correction: Annotated[bool, typer.Option(help="Record this as a correction of the current version.")] = False,
    note: Annotated[str, typer.Option(help="Why: kept in the public registration history.")] = "",
) -> None:
    """Check a data file against its catalogue entry and make it the served version."""
    settings = settings_for(config, creating=True)
    with host_change(settings, "register") as record, guard("registration"), progress() as bar:
        task = bar.add_task("registering", total=None)
        outcome = registration.register(
            CatalogStore(settings.data_path),
            settings.data_path,
            entry,
            source,
            correction=correction,
            note=note,
            progress=lambda step: bar.update(task, description=step),
            limits=registration.build_limits(settings),
        )
        bar.update(task, description="done", total=1, completed=1)
        made = outcome.record
        state = "unchanged (same content version)" if outcome.unchanged else made.history[-1].kind.value
        record({"dataset": made.entry.dataset, "version": made.version, "rows": outcome.rows, "state": state})
    typer.echo(
        f"{made.entry.dataset}: {state}; version {made.version}; {outcome.rows:,} rows served; "
        f"{outcome.rows_dropped_by_contribution_bound:,} rows dropped by the contribution bound "
        f"(at most {made.entry.privacy_unit.max_rows} per {made.entry.privacy_unit.column})"
    )


def deregister(
    dataset: str,
    config: ConfigOption = None,
    note: Annotated[str, typer.Option(help="Why: kept in the public registration history.")] = "",
) -> None:
    """Cancel a dataset's registration: it stays listed as cancelled and is no longer served."""
    settings = settings_for(config)
    with host_change(settings, "deregister") as record, guard("cancellation"):
        registration.cancel(CatalogStore(settings.data_path), dataset, note=note)
        record({"dataset": dataset, "note": note})
    typer.echo(f"{dataset}: cancelled")
