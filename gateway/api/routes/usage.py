"""A consumer's own usage statement."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from gateway.api.deps import principal, runtime
from gateway.domain.principal import Principal
from gateway.services import metering
from gateway.services.runtime import Runtime

router = APIRouter(tags=["account"])


@router.get("/v1/usage")
def usage(
    rt: Annotated[Runtime, Depends(runtime)],
    who: Annotated[Principal, Depends(principal)],
    since: Annotated[date, Query(description="First UTC day, YYYY-MM-DD.")],
    until: Annotated[date, Query(description="Last UTC day, YYYY-MM-DD.")],
) -> dict[str, Any]:
    """Your calls, claims, billable claims and fees per grant, service, purpose and day; and the
    privacy budget your releases spent per grant, service, dataset and day."""
    return metering.statement(rt, since, until, consumer=who.client_id)
