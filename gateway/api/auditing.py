"""From an HTTP exchange to its audit event.

Routes say what the request was about (`note`); the request middleware appends the event when
the response starts, before any byte of it leaves. A route that releases a result appends its
own event first, because its receipt must name the leaf (`AUDITED_AS`), and the middleware then
leaves it alone.

SECURITY: only the route template is recorded, never the raw path or query, which a caller
controls and could fill with a person's key; the principal only once its token verified.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import Request, Response
from starlette.types import Scope

from gateway.domain.principal import Principal
from gateway.domain.trail import AuditEvent, Decision, Json, digest, utc_now
from gateway.services.release import Release

UNAUDITED_PATHS = frozenset({"/healthz", "/readyz"})
"""Liveness and readiness probes: no caller, no data, and they would drown the log."""

AUDITED_AS = "audit_seq"
RECEIVED_AT = "received_at"


def note(
    request: Request,
    *,
    service: str | None = None,
    dataset: str | None = None,
    dataset_version: str | None = None,
    client: tuple[str, str] | None = None,
    subjects: Iterable[str] = (),
) -> None:
    """Record what this request is about, for its audit event.

    `client` is (client id, organisation) for a caller proven by other means than a bearer
    token, such as the token endpoint's client secret. `subjects` are pseudonyms only.
    """
    request.state.audit_service = service
    request.state.audit_dataset = dataset
    request.state.audit_dataset_version = dataset_version
    request.state.audit_subjects = tuple(subjects)
    if client is not None:
        request.state.audit_client = client


def note_record(request: Request, record: Json) -> None:
    """Bind this request's audit leaf to a record an administrative write kept (its digest, in
    the leaf's `result_digest`), so the record cannot be changed afterwards unnoticed."""
    request.state.audit_result_digest = digest(record)


def event_for(scope: Scope, status: int, *, reason: str | None = None) -> AuditEvent:
    state: dict[str, Any] = scope.get("state", {})
    principal = state.get("principal")
    client_id, organisation = state.get("audit_client") or (None, None)
    if isinstance(principal, Principal):
        client_id, organisation = principal.client_id, principal.organisation
    route = getattr(scope.get("route"), "path", None)
    return AuditEvent(
        time=state.get(RECEIVED_AT) or utc_now(),
        request_id=str(state.get("request_id", "unknown")),
        principal=client_id,
        organisation=organisation,
        method=str(scope.get("method", "")),
        route=route if isinstance(route, str) else "(no route)",
        service=state.get("audit_service"),
        dataset=state.get("audit_dataset"),
        dataset_version=state.get("audit_dataset_version"),
        decision=Decision.for_status(status),
        reason=reason or state.get("problem"),
        result_digest=state.get("audit_result_digest") if status < 400 else None,
        subjects=tuple(state.get("audit_subjects", ())),
        status=status,
    )


def allowed_event(request: Request) -> AuditEvent:
    """This request's event as allowed, for `services.release.release` to complete and append."""
    return event_for(request.scope, 200)


def released_response(request: Request, released: Release, headers: Mapping[str, str] | None = None) -> Response:
    """The response of a released result; the middleware will not append a second leaf."""
    setattr(request.state, AUDITED_AS, released.audit_seq)
    return Response(released.body_bytes(), media_type="application/json", headers=headers)
