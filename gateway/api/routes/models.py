"""Model routes: the public registry, in-domain scoring of one entity or a batch, DP fitting."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from gateway.api.auditing import allowed_event, note, released_response
from gateway.api.deps import body_schema, json_body, principal, runtime
from gateway.api.routes.verify import rate_limit_headers
from gateway.api.schemas import FitRequest, NamePath, ReleasedResponse, ScoreRequest
from gateway.domain.principal import Principal
from gateway.services import fitting, model_catalogue, scoring
from gateway.services.runtime import Runtime
from gateway.services.verification import AuditNote

router = APIRouter(tags=["models"])


@router.get("/v1/models")
async def registry(rt: Annotated[Runtime, Depends(runtime)]) -> dict[str, Any]:
    """Approved models with the public part of their cards and their version hashes."""
    return {"models": model_catalogue.catalogue(rt)}


@router.post("/v1/models/{model}/score", response_model=ReleasedResponse, openapi_extra=body_schema(ScoreRequest))
async def score(request: Request, model: NamePath) -> Response:
    """Score each entity in the domain: only its score and/or grade band leave, signed."""
    # A hot path like verification: no dependencies (see `deps.json_body`); authentication first.
    who = await principal(request)
    body = await json_body(request, ScoreRequest)
    rt: Runtime = request.app.state.runtime
    audit_note = AuditNote()
    call = scoring.ScoreCall(model=model, purpose=body.purpose, keys=body.keys, body=body.model_dump(mode="json"))
    try:
        event = allowed_event(request)
        if scoring.scores_in_memory(rt, model):
            prepared = scoring.prepare_scoring(rt, who, event, call, audit_note)
        else:  # an index to build or DuckDB lookups: off the event loop
            prepared = await asyncio.to_thread(scoring.prepare_scoring, rt, who, event, call, audit_note)
        admission = await rt.ledger.admit_verification_async(prepared.admission, now=prepared.now)
    finally:
        note(request, service=audit_note.service, subjects=audit_note.subjects)
    pending = scoring.pending_scoring(rt, prepared, admission)
    released = pending.complete(rt, await rt.audit.append_async(pending.leaf))
    return released_response(request, released, rate_limit_headers(admission.windows))


@router.post("/v1/models/{model}/fit", response_model=ReleasedResponse)
async def fit(
    request: Request,
    rt: Annotated[Runtime, Depends(runtime)],
    who: Annotated[Principal, Depends(principal)],
    model: NamePath,
    body: FitRequest,
) -> Response:
    """Fit an approved model under DP, charged to your budget once (the same fit again is free)."""
    epsilon = None if body.epsilon is None else str(body.epsilon)
    plan = await run_in_threadpool(fitting.authorize_fit, rt, who, model, body.purpose, epsilon)
    note(request, service=plan.name, dataset=plan.model.dataset)
    released = await run_in_threadpool(
        fitting.release_fit, rt, allowed_event(request), plan, body.model_dump(mode="json")
    )
    return released_response(request, released)
