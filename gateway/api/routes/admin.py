"""Administration routes: admin role, auditors read."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.deps import require_role, runtime
from gateway.api.schemas import (
    ConsumerCreatedResponse,
    ConsumerCreateRequest,
    DatasetAdminListResponse,
    DatasetAdminResponse,
    FreezeListResponse,
    FreezeRequest,
)
from gateway.domain.policy import Freeze
from gateway.domain.principal import Principal, Role
from gateway.services import tracker
from gateway.services.runtime import Runtime

router = APIRouter(prefix="/v1/admin", tags=["administration"])


@router.get("/datasets", response_model=DatasetAdminListResponse)
def datasets(
    rt: Annotated[Runtime, Depends(runtime)],
    _who: Annotated[Principal, Depends(require_role(Role.ADMIN, Role.AUDITOR))],
) -> DatasetAdminListResponse:
    """Registration state with exact counts: for the data management body, not the public."""
    return DatasetAdminListResponse(
        datasets=[
            DatasetAdminResponse.model_validate(
                {
                    "dataset": r.entry.dataset,
                    "status": r.status,
                    "version": r.version,
                    "rows": r.rows,
                    "rows_dropped_by_contribution_bound": r.rows_dropped_by_contribution_bound,
                    "history": [h.model_dump(mode="json") for h in r.history],
                }
            )
            for r in rt.catalog.records()
        ]
    )


@router.post("/consumers", response_model=ConsumerCreatedResponse, status_code=201)
def create_consumer(
    body: ConsumerCreateRequest,
    rt: Annotated[Runtime, Depends(runtime)],
    _who: Annotated[Principal, Depends(require_role(Role.ADMIN))],
) -> ConsumerCreatedResponse:
    """Create a client account; only administrators make accounts, and the secret is shown once."""
    secret = rt.clients.add(body.client_id, body.organisation, body.roles)
    return ConsumerCreatedResponse(client_id=body.client_id, client_secret=secret)


@router.delete("/consumers/{client_id}", status_code=204)
def disable_consumer(
    client_id: str,
    rt: Annotated[Runtime, Depends(runtime)],
    _who: Annotated[Principal, Depends(require_role(Role.ADMIN))],
) -> Response:
    """Disable a client account: its tokens stop working on the next request."""
    rt.clients.disable(client_id)
    return Response(status_code=204)


@router.post("/freeze", response_model=Freeze, status_code=201)
def freeze(
    body: FreezeRequest,
    rt: Annotated[Runtime, Depends(runtime)],
    who: Annotated[Principal, Depends(require_role(Role.ADMIN))],
) -> Freeze:
    """Emergency stop: refuse every request of a consumer, organisation, dataset or service, in
    every process, from the next request on. `veilgate freeze` does the same without the API."""
    return rt.freezes.freeze(body.kind, body.name, by=who.client_id, reason=body.reason)


@router.post("/unfreeze", response_model=Freeze)
def unfreeze(
    body: FreezeRequest,
    rt: Annotated[Runtime, Depends(runtime)],
    who: Annotated[Principal, Depends(require_role(Role.ADMIN))],
) -> Freeze:
    """Lift a freeze; the history keeps both, with who and why."""
    return rt.freezes.unfreeze(body.kind, body.name, by=who.client_id, reason=body.reason)


@router.get("/freezes", response_model=FreezeListResponse)
def freezes(
    rt: Annotated[Runtime, Depends(runtime)],
    _who: Annotated[Principal, Depends(require_role(Role.ADMIN, Role.AUDITOR))],
) -> FreezeListResponse:
    return FreezeListResponse(active=list(rt.freezes.active().values()), history=rt.freezes.history())


class TrackerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=64, description="The credit code or resident id asked about.")


@router.post("/tracker")
def tracker_lookup(
    body: TrackerRequest,
    rt: Annotated[Runtime, Depends(runtime)],
    _who: Annotated[Principal, Depends(require_role(Role.ADMIN, Role.AUDITOR))],
) -> dict[str, Any]:
    """Who asked about this key, when and under which grant (POST: the key stays out of URLs)."""
    return {"requests": tracker.track(rt, body.key)}


@router.get("/alerts")
def alerts(
    rt: Annotated[Runtime, Depends(runtime)],
    _who: Annotated[Principal, Depends(require_role(Role.ADMIN, Role.AUDITOR))],
    since: str | None = None,
) -> dict[str, Any]:
    """Early warnings, newest first: quotas at 80%, request rates at 80%, probing and enumeration
    limits reached, bursts of refusals, failed policy reloads."""
    return {"alerts": rt.ledger.alerts(since)}
