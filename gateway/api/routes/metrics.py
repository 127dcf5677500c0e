"""GET /metrics: the Prometheus exposition, for auditors and administrators only.

Behind the same bearer tokens as every other route (Prometheus fetches one with its `oauth2`
client-credentials settings), because the figures describe use: how often each dataset was
released, how much budget was spent. Counts only, never a key or a value (observability.metrics).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from gateway.api.deps import require_role, runtime
from gateway.domain.principal import Principal, Role
from gateway.observability.metrics import CONTENT_TYPE, JobStates, exposition
from gateway.services.runtime import Runtime

router = APIRouter(tags=["operations"])


@router.get("/metrics", response_class=Response, include_in_schema=False)
def metrics(
    rt: Annotated[Runtime, Depends(runtime)],
    _who: Annotated[Principal, Depends(require_role(Role.AUDITOR, Role.ADMIN))],
) -> Response:
    return Response(exposition(JobStates(rt.jobs.status_counts)), media_type=CONTENT_TYPE)
