"""Which installation a command acts on (`--config`, VEILGATE_CONFIG, ./veilgate.toml, the
demo's), and the stores a command opens on it: each opened for one command and closed after,
without listening for other processes' changes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from gateway.cli.console import console, fail, guard
from gateway.services.runtime import Runtime
from gateway.settings import Settings, load_settings
from gateway.state.backend import open_accounts, open_freezes, open_log
from gateway.state.ports import AccountStore, AuditLogStore, FreezeStore

__all__ = [
    "DEMO_CONFIG",
    "ConfigOption",
    "account_store",
    "audit_log",
    "freeze_store",
    "runtime",
    "settings_for",
]

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", envvar="VEILGATE_CONFIG", help="TOML config file.")
]

DEMO_CONFIG = Path(".demo") / "veilgate.toml"


def settings_for(config: Path | None, *, creating: bool = False) -> Settings:
    """The installation: `--config`, else VEILGATE_CONFIG (both given to `config` by Typer), else
    ./veilgate.toml, else the demo's .demo/veilgate.toml (said in one line). With none of them, only
    a command that creates an installation (`creating`) goes on, on the default ./state."""
    if config is not None and not config.is_file():
        fail(f"config file {config} does not exist")
    if config is None:
        config = next((c for c in (Path("veilgate.toml"), DEMO_CONFIG) if c.is_file()), None)
        if config == DEMO_CONFIG:
            console.print(f"[dim]using the demo's configuration {config.resolve()}[/dim]", highlight=False)
    settings = load_settings(config)
    if config is None and not creating and not settings.state_dir.exists():
        fail(
            "no configuration found: pass --config FILE, set VEILGATE_CONFIG, or run where veilgate.toml "
            "(or the demo's .demo/veilgate.toml) is"
        )
    return settings


@contextmanager
def runtime(action: str, config: Path | None) -> Iterator[Runtime]:
    """The whole runtime, for a command that acts like the server; errors become one line."""
    settings = settings_for(config)
    with guard(action):
        rt = Runtime.open(settings)
        try:
            yield rt
        finally:
            rt.close()


def account_store(settings: Settings) -> contextlib.closing[AccountStore]:
    """The accounts as configured, for one command (no listening: it reads what it needs)."""
    return contextlib.closing(open_accounts(settings, listen=False))


def freeze_store(settings: Settings) -> contextlib.closing[FreezeStore]:
    """The stops as configured, for one command: works while no gateway can start."""
    return contextlib.closing(open_freezes(settings, listen=False))


def audit_log(settings: Settings) -> AuditLogStore:
    """The installation's audit log; a missing SQLite log is a one-line failure, not a new file."""
    if not settings.database_dsn and not (settings.audit_dir / "log.sqlite3").exists():
        fail(f"no audit log under {settings.audit_dir}; has this installation served yet?")
    return open_log(settings.audit_dir, dsn=settings.database_dsn, schema=settings.database_schema)
