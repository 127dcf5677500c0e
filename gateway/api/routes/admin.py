"""Administration routes: admin role, auditors read."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.deps import require_role, runtime
from gateway.api.schemas import (
    ClientIdPath,
    ConsumerCreateRequest,
    DatasetAdminListResponse,
    DatasetAdminResponse,
    FreezeListResponse,
    FreezeRequest,
    RecordIdPath,
)
from gateway.domain.policy import Freeze
from gateway.domain.principal import Principal, Role
from gateway.services import accounts_admin, tracker
from gateway.services.runtime import Runtime
from gateway.state.ports import LiftApproval

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


@router.post("/consumers", status_code=201)
def create_consumer(
    body: ConsumerCreateRequest,
    rt: Annotated[Runtime, Depends(runtime)],
    who: Annotated[Principal, Depends(require_role(Role.ADMIN))],
) -> JSONResponse:
    """Create a client account (201, the secret shown once). An account with a privileged role
    is a proposal (202) that an administrator of another identity approves; its secret comes in
    two halves, one to each of them."""
    outcome = accounts_admin.create(
        rt, who, body.client_id, organisation=body.organisation, roles=body.roles, person=body.person
    )
    status, answer = accounts_admin.answer(outcome)
    return JSONResponse({"client_id": body.client_id, **answer}, status_code=201 if status == 200 else status)


@router.get("/consumers")
def consumers(
    rt: Annotated[Runtime, Depends(runtime)],
    _who: Annotated[Principal, Depends(require_role(Role.ADMIN, Role.AUDITOR))],
) -> dict[str, Any]:
    """The accounts (never a secret's hash) and the open proposals that change them."""
    return {"accounts": [accounts_admin.public(a) for a in rt.clients.all()], "proposals": rt.clients.proposals()}


@router.delete("/consumers/{client_id}", status_code=204)
def disable_consumer(
    client_id: ClientIdPath,
    rt: Annotated[Runtime, Depends(runtime)],
    who: Annotated[Principal, Depends(require_role(Role.ADMIN))],
) -> Response:
    """Disable an account: at once (204) for a consumer or researcher, whose tokens stop on the
    next request; a privileged account's is a proposal (202) another identity approves."""
    status, answer = accounts_admin.answer(accounts_admin.change(rt, who, client_id, "disable"))
    return Response(status_code=204) if status == 200 else JSONResponse(answer, status_code=status)


@router.post("/consumers/{client_id}/enable", status_code=202)
def enable_consumer(
    client_id: ClientIdPath,
    rt: Annotated[Runtime, Depends(runtime)],
    who: Annotated[Principal, Depends(require_role(Role.ADMIN))],
) -> JSONResponse:
    """Re-enable a disabled account: always a proposal (202) another identity approves."""
    status, answer = accounts_admin.answer(accounts_admin.change(rt, who, client_id, "enable"))
    return JSONResponse(answer, status_code=status)


@router.put("/consumers/{client_id}/roles", status_code=202)
def set_roles(
    client_id: ClientIdPath,
    body: RolesRequest,
    rt: Annotated[Runtime, Depends(runtime)],
    who: Annotated[Principal, Depends(require_role(Role.ADMIN))],
) -> JSONResponse:
    """Replace an account's roles: at once (200) when no privileged role is granted or
    withdrawn, else a proposal (202) another identity approves."""
    status, answer = accounts_admin.answer(accounts_admin.change(rt, who, client_id, "roles", body.roles))
    return JSONResponse(answer, status_code=status)


@router.post("/consumers/proposals/{proposal_id}/approve")
def approve_account_change(
    proposal_id: RecordIdPath,
    rt: Annotated[Runtime, Depends(runtime)],
    who: Annotated[Principal, Depends(require_role(Role.ADMIN))],
) -> JSONResponse:
    """Approve an account change: by an administrator of another identity than the proposer's
    and earlier approvers'; applied (200) once enough did, if the account did not change since."""
    status, answer = accounts_admin.answer(accounts_admin.approve(rt, who, proposal_id))
    return JSONResponse(answer, status_code=status)


@router.post("/freeze", response_model=Freeze, status_code=201)
def freeze(
    body: FreezeRequest,
    rt: Annotated[Runtime, Depends(runtime)],
    who: Annotated[Principal, Depends(require_role(Role.ADMIN))],
) -> Freeze:
    """Emergency stop: refuse every request of a consumer, organisation, dataset or service, in
    every process, from the next request on. `veilgate freeze` does the same without the API."""
    return rt.freezes.freeze(body.kind, body.name, by=who.client_id, reason=body.reason)


@router.post(
    "/unfreeze",
    response_model=Freeze,
    responses={202: {"model": Freeze, "description": "Asked: the stop holds until another identity asks too."}},
)
def unfreeze(
    body: FreezeRequest,
    rt: Annotated[Runtime, Depends(runtime)],
    who: Annotated[Principal, Depends(require_role(Role.ADMIN))],
) -> JSONResponse:
    """Lift a freeze once administrators of two identities asked within a day (as many as a
    policy change needs): the first request answers 202 with the stop and its `lift`, the stop
    holding; the second 200. The history keeps each, with who and why."""
    approval = LiftApproval(rt.clients.identity_of(who.client_id), rt.settings.policy_approvals)
    done = rt.freezes.unfreeze(body.kind, body.name, by=who.client_id, reason=body.reason, approval=approval)
    return JSONResponse(done.freeze.model_dump(mode="json"), status_code=200 if done.lifted else 202)


@router.get("/freezes", response_model=FreezeListResponse)
def freezes(
    rt: Annotated[Runtime, Depends(runtime)],
    _who: Annotated[Principal, Depends(require_role(Role.ADMIN, Role.AUDITOR))],
) -> FreezeListResponse:
    now = datetime.now(UTC)
    shown = [stop.as_shown(now) for stop in rt.freezes.active().values()]
    return FreezeListResponse(active=shown, history=rt.freezes.history())


class RolesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    roles: list[Role] = Field(min_length=1, max_length=4)


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
