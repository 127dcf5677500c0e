"""Aggregate routes for researchers: preview (free), release (charged once), batches, budget.

A release answers with the signed result document. With an `Idempotency-Key` header, the first
answer of that key is stored and every retry with the same key and body gets it back byte for
byte; the same key with another body is refused.
"""

from __future__ import annotations

import functools
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from gateway.api.auditing import allowed_event, note, released_response
from gateway.api.deps import principal, runtime
from gateway.api.schemas import (
    AggregateBatchRequest,
    AggregateQueryRequest,
    AggregateRequest,
    NamePath,
    ReleasedResponse,
)
from gateway.domain.principal import Principal
from gateway.domain.trail import Json, digest
from gateway.errors import Conflict, InvalidRequest
from gateway.services import aggregate, budget, charging
from gateway.services.runtime import Runtime

router = APIRouter(tags=["aggregates"])
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", max_length=128, description="Retry-safe: the first answer is replayed."),
]


def _query(template: str, body: AggregateQueryRequest) -> aggregate.Query:
    widest: Decimal | None = None
    if body.max_interval_width is not None:
        try:
            widest = Decimal(str(body.max_interval_width))
        except InvalidOperation:
            raise InvalidRequest("max_interval_width: give a number") from None
        if not widest.is_finite() or widest <= 0:
            raise InvalidRequest("max_interval_width: give a positive number")
    return aggregate.Query(
        template=template,
        parameters=body.parameters.model_dump(mode="json", by_alias=True, exclude_none=True),
        epsilon=None if body.epsilon is None else str(body.epsilon),
        max_interval_width=widest,
    )


def _note_batch(request: Request, rt: Runtime, queries: list[aggregate.Query]) -> None:
    """Name the template and dataset in the leaf, once they are known to be real ones."""
    templates = aggregate.known_templates(rt, [q.template for q in queries])
    if len(templates) == 1:
        name, dataset = templates[0]
        note(request, service=name, dataset=dataset)
    elif templates:
        note(request, service="aggregate-batch")


@router.get("/v1/aggregate")
async def list_templates(
    rt: Annotated[Runtime, Depends(runtime)], who: Annotated[Principal, Depends(principal)]
) -> dict[str, Any]:
    """The aggregate templates your current grants cover."""
    return {"templates": aggregate.templates_for(rt, who)}


@router.post("/v1/aggregate/{template}/preview")
async def preview(
    request: Request,
    rt: Annotated[Runtime, Depends(runtime)],
    who: Annotated[Principal, Depends(principal)],
    template: NamePath,
    body: AggregateRequest,
) -> dict[str, Any]:
    """Cost and expected accuracy of a query; reads no data and spends nothing."""
    queries = [_query(template, body)]
    _note_batch(request, rt, queries)
    return aggregate.preview(await run_in_threadpool(aggregate.authorize_batch, rt, who, body.purpose, queries))


@router.post("/v1/aggregate-batch/preview")
async def preview_batch(
    request: Request,
    rt: Annotated[Runtime, Depends(runtime)],
    who: Annotated[Principal, Depends(principal)],
    body: AggregateBatchRequest,
) -> dict[str, Any]:
    """The total cost of a batch, and each query's expected accuracy; spends nothing."""
    queries = [_query(q.template, q) for q in body.queries]
    _note_batch(request, rt, queries)
    return aggregate.preview(await run_in_threadpool(aggregate.authorize_batch, rt, who, body.purpose, queries))


@router.post("/v1/aggregate/{template}", response_model=ReleasedResponse)
async def release_one(
    request: Request,
    rt: Annotated[Runtime, Depends(runtime)],
    who: Annotated[Principal, Depends(principal)],
    *,
    template: NamePath,
    body: AggregateRequest,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Release one query under differential privacy, charged to your budget (or replayed free)."""
    queries = [_query(template, body)]
    _note_batch(request, rt, queries)
    return await _release(
        request, rt, who, purpose=body.purpose, queries=queries, idempotency_key=idempotency_key, single=True
    )


@router.post("/v1/aggregate-batch", response_model=ReleasedResponse)
async def release_batch(
    request: Request,
    rt: Annotated[Runtime, Depends(runtime)],
    who: Annotated[Principal, Depends(principal)],
    *,
    body: AggregateBatchRequest,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Release a batch together: all of it is charged at once, or none of it."""
    queries = [_query(q.template, q) for q in body.queries]
    _note_batch(request, rt, queries)
    return await _release(
        request, rt, who, purpose=body.purpose, queries=queries, idempotency_key=idempotency_key, single=False
    )


async def _release(
    request: Request,
    rt: Runtime,
    who: Principal,
    *,
    purpose: str,
    queries: list[aggregate.Query],
    idempotency_key: str | None,
    single: bool,
) -> Response:
    if idempotency_key is not None:
        request_digest = digest(
            {"route": request.url.path, "purpose": purpose, "queries": [aggregate.request_of(q) for q in queries]}
        )
        held = await run_in_threadpool(
            functools.partial(
                rt.budget.claim_idempotency_key,
                who.client_id,
                idempotency_key,
                request_digest,
                expired_before=charging.expired_before(),  # a key a crash left running is taken over
            )
        )
        if held is not None:
            if held.request_digest != request_digest:
                raise InvalidRequest("Idempotency-Key: already used with a different request")
            if held.body is None:
                raise Conflict(
                    "Idempotency-Key: a request with this key is still running; retry shortly",
                    headers={"Retry-After": "2"},
                )
            return Response(held.body.encode(), media_type="application/json")
    try:
        batch = await run_in_threadpool(aggregate.authorize_batch, rt, who, purpose, queries)
        released = await run_in_threadpool(
            aggregate.release_batch, rt, who, allowed_event(request), batch, single=single
        )
    except BaseException:
        if idempotency_key is not None:
            await run_in_threadpool(rt.budget.finish_idempotency_key, who.client_id, idempotency_key, None)
        raise
    response = released_response(request, released)
    if idempotency_key is not None:
        await run_in_threadpool(
            rt.budget.finish_idempotency_key, who.client_id, idempotency_key, bytes(response.body).decode()
        )
    return response


@router.get("/v1/budget")
async def budget_status(
    rt: Annotated[Runtime, Depends(runtime)], who: Annotated[Principal, Depends(principal)]
) -> Json:
    """Your privacy budget: granted, spent, reserved and remaining, per grant and dataset, at each level."""
    return await run_in_threadpool(budget.budget_view, rt, who)
