"""Model routes: the public registry, in-domain scoring of one entity or a batch, DP fitting."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from gateway.api import hot_paths
from gateway.api.auditing import allowed_event, note, released_response
from gateway.api.deps import principal, reads_bearer_token, runtime
from gateway.api.hot_bodies import ScoreRequest, openapi_body
from gateway.api.schemas import FitRequest, NamePath, ReleasedResponse
from gateway.domain.principal import Principal
from gateway.services import fitting, model_catalogue
from gateway.services.runtime import Runtime

router = APIRouter(tags=["models"])


@router.get("/v1/models")
async def registry(rt: Annotated[Runtime, Depends(runtime)]) -> dict[str, Any]:
    """Approved models with the public part of their cards and their version hashes."""
    return {"models": model_catalogue.catalogue(rt)}


@router.post("/v1/models/{model}/score", response_model=ReleasedResponse, openapi_extra=openapi_body(ScoreRequest))
@reads_bearer_token
async def score(request: Request, model: NamePath) -> Response:
    """Score each entity in the domain: only its score and/or grade band leave, signed."""
    # Served by `hot_paths.HotPaths` before FastAPI routing; declared here for the API document.
    return await hot_paths.score(request, model)


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
