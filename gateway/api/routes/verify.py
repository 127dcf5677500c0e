"""Verification routes for business systems: one claim or a batch, answered per field, signed."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.api.auditing import allowed_event, note, released_response
from gateway.api.deps import body_schema, json_body, principal
from gateway.api.schemas import NamePath, ReleasedResponse, VerifyRequest
from gateway.services import verification
from gateway.services.runtime import Runtime
from gateway.state.ports import Window

router = APIRouter(tags=["verification"])


def rate_limit_headers(windows: tuple[Window, ...]) -> dict[str, str]:
    """IETF HTTPAPI rate-limit fields: the policies, and what is left of each."""
    return {
        "RateLimit-Policy": ", ".join(f'"{w.name}";q={w.limit};w={w.window_seconds}' for w in windows),
        "RateLimit": ", ".join(f'"{w.name}";r={max(0, w.remaining)};t={w.reset_seconds}' for w in windows),
    }


@router.post("/v1/verify/{service}", response_model=ReleasedResponse, openapi_extra=body_schema(VerifyRequest))
async def verify(request: Request, service: NamePath) -> Response:
    """Answer each claim with match, no_match (or not_found, where the service says so) per field.

    Invalid claims get an error naming their index and field; the others are still answered.
    A tripped limit (429, Retry-After) refuses the whole request and counts nothing.
    """
    # The hot path takes no dependencies (see `deps.json_body`); authentication comes first.
    who = await principal(request)
    body = await json_body(request, VerifyRequest)
    rt: Runtime = request.app.state.runtime
    audit_note = verification.AuditNote()
    call = verification.VerifyCall(
        service=service,
        purpose=body.purpose,
        claims=[verification.Claim(c.keys, c.checks, c.consent_ref) for c in body.claims],
        body=body.model_dump(mode="json"),
    )
    # Async, awaiting the two durable steps (ledger, audit leaf) instead of blocking a thread:
    # the CPU work is a fraction of a millisecond, and thread hops under load cost more.
    try:
        event = allowed_event(request)
        if verification.answers_in_memory(rt, service):
            prepared = verification.prepare(rt, who, event, call, audit_note)
        else:  # an index to build or DuckDB lookups: off the event loop
            prepared = await asyncio.to_thread(verification.prepare, rt, who, event, call, audit_note)
        admission = await rt.ledger.admit_verification_async(prepared.admission, now=prepared.now)
    finally:  # what the leaf records, refusals included
        note(request, service=audit_note.service, subjects=audit_note.subjects)
    pending = verification.pending_release(rt, prepared, admission)
    released = pending.complete(rt, await rt.audit.append_async(pending.leaf))
    return released_response(request, released, rate_limit_headers(admission.windows))
