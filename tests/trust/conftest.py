"""Factories for the trust core: a key ring, an audit log, events."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.audit import AuditLog
from gateway.domain.trail import AuditEvent, Decision, utc_now
from gateway.signing import KeyRing


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


@pytest.fixture
def audit_log(tmp_path: Path) -> Iterator[AuditLog]:
    log = AuditLog.open(tmp_path / "audit")
    yield log
    log.close()
