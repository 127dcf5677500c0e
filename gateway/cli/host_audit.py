"""Changes made from the host's command line leave a leaf in the audit log, as the API's do.

A command acts for no account: its leaf names the host user (`cli:<user>`) as principal and the
command as route (`veilgate freeze`), and binds what it changed by `result_digest`, the digest of
the change as the command made it (never a secret it printed). An auditor reading the log sees
what was changed from the host and when; a store rewritten afterwards no longer matches its leaf.
"""

from __future__ import annotations

import getpass
import secrets
from typing import Any

from gateway.cli.console import fail
from gateway.domain.trail import AuditEvent, Decision, digest, utc_now
from gateway.settings import Settings
from gateway.state.backend import open_log

__all__ = ["host_user", "record_change"]


def host_user() -> str:
    """Who runs the command, as the stores and the log name them."""
    return f"cli:{getpass.getuser()}"


def record_change(settings: Settings, command: str, change: dict[str, Any]) -> None:
    """Append the leaf of a change already made. If the log cannot take it, say so and exit 1:
    the change stands, and the operator must know it is not in the log."""
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
        log = open_log(settings.audit_dir, dsn=settings.database_dsn, schema=settings.database_schema)
        try:
            log.append_now(event)
        finally:
            log.close()
    except Exception as exc:  # any failure of the log: the operator must hear of it
        fail(f"{command}: done, but not recorded in the audit log ({type(exc).__name__}); record it by hand")
