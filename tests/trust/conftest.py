"""Factories for the trust core: a key ring, an audit log, events."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.domain.trail import AuditEvent, Decision, utc_now
from gateway.signing import KeyRing
from gateway.state.audit import AuditLogRules as AuditLog
from gateway.state.audit_postgres import PostgresAuditLog
from gateway.state.audit_sqlite import SqliteAuditLog
from tests.conftest import ON_POSTGRES, store_handles


def event(n: int = 0, *, principal: str | None = "demo-business", status: int = 200, **over: object) -> AuditEvent:
    values: dict[str, object] = {
        "time": utc_now(),
        "request_id": f"req-{n:06d}",
        "principal": principal,
        "organisation": "Demo Commercial Bank" if principal else None,
        "method": "GET",
        "route": "/v1/catalog",
        "decision": Decision.for_status(status),
        "status": status,
        **over,
    }
    return AuditEvent.model_validate(values)


@pytest.fixture
def receipt_keys(tmp_path: Path) -> KeyRing:
    return KeyRing.create(tmp_path / "keys" / "receipt")


@pytest.fixture(params=["sqlite", ON_POSTGRES])
def open_audit(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], AuditLog]]:
    """A factory: every call opens another handle on one log (another process, or a replica)."""
    with store_handles(
        request.param,
        lambda: SqliteAuditLog.open(tmp_path / "audit"),
        lambda dsn, schema: PostgresAuditLog(dsn, schema=schema, key_directory=tmp_path / "audit"),
    ) as factory:
        yield factory


@pytest.fixture
def audit_log(open_audit: Callable[[], AuditLog]) -> AuditLog:
    return open_audit()
