"""Changes made from the host's command line leave a leaf in the audit log, as the API's do.

A command acts for no account: its leaf names the host user (`cli:<user>`) as principal and the
command as route (`veilgate freeze`), and binds what it changed by `result_digest`, the digest of
the change as the command made it (never a secret it printed). An auditor reading the log sees
what was changed from the host and when; a store rewritten afterwards no longer matches its leaf.
"""

from __future__ import annotations

import contextlib
import getpass
import secrets
from collections.abc import Callable, Iterator
from typing import Any

from rich.markup import escape

from gateway.cli.console import console, fail
from gateway.domain.trail import AuditEvent, Decision, digest, utc_now
from gateway.settings import Settings
from gateway.state.backend import local_log_has_leaves, open_log
from gateway.state.ports import AuditLogStore

__all__ = ["host_change", "host_user"]

Record = Callable[[dict[str, Any]], None]


def host_user() -> str:
    """Who runs the command, as the stores and the log name them."""
    return f"cli:{getpass.getuser()}"


@contextlib.contextmanager
def host_change(settings: Settings, command: str, *, emergency: bool = False) -> Iterator[Record]:
    """The log, opened and checked before the change is made (a command whose leaf could not be
    written changes nothing), and `record(change)` to append the leaf once it is made. If the
    append itself fails, the command says the change stands unrecorded and exits 1.

    `emergency` (a freeze): the change is made whatever the log's state, and a leaf that cannot
    be written is said in one line instead: an emergency stop never waits on the audit log."""
    log: AuditLogStore | None = None
    problem = None
    try:
        log = open_log(settings.audit_dir, dsn=settings.database_dsn, schema=settings.database_schema)
        if settings.database_dsn and log.size() == 0 and local_log_has_leaves(settings.audit_dir):
            problem = (
                f"the audit log in {settings.audit_dir} has leaves and PostgreSQL's has none: run "
                "`veilgate database import` first (a leaf written now would begin the trail anew)"
            )
    except Exception as exc:  # the log cannot be opened
        problem = f"the audit log cannot be opened ({type(exc).__name__})"
    if problem is not None or log is None:
        if log is not None:
            log.close()
        if not emergency:
            fail(f"{command}: {problem}; nothing was changed")
        said = escape(f"{command}: done, but not in the audit log: {problem}")
        yield lambda _change: console.print(f"[yellow]{said}[/yellow]")
        return
    opened = log
    try:

        def record(change: dict[str, Any]) -> None:
            event = AuditEvent(
                time=utc_now(),
                request_id=secrets.token_hex(16),
                principal=host_user(),
                method="CLI",
                route=f"veilgate {command}",
                decision=Decision.ALLOWED,
                status=200,
                result_digest=digest(change),
            )
            try:
                opened.append_now(event)
            except Exception as exc:  # the change stands: the operator must know it is not in the log
                fail(f"{command}: done, but not recorded in the audit log ({type(exc).__name__}); record it by hand")

        yield record
    finally:
        opened.close()
