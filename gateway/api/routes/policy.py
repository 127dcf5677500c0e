"""Administration of the policy bundle and its grants. Changes are validated first, proposed
from the version in force, and in force once administrators of enough identities approved
(`policy_approvals`); another administrator may reject a proposal, its proposer withdraw it
(either closes it for good); revoking a grant only takes permission away and is in force at once.
Auditors read."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.auditing import note_record
from gateway.api.deps import require_role, runtime
from gateway.api.schemas import NamePath, RecordIdPath
from gateway.domain.policy import Grant, Name, PolicyBundle
from gateway.domain.principal import Principal, Role
from gateway.errors import NotFound
from gateway.services import policy_admin
from gateway.services.runtime import Runtime
from gateway.state.ports import Change, Decision

router = APIRouter(prefix="/v1/admin", tags=["administration"])
RuntimeDep = Annotated[Runtime, Depends(runtime)]
Admin = Annotated[Principal, Depends(require_role(Role.ADMIN))]
Reader = Annotated[Principal, Depends(require_role(Role.ADMIN, Role.AUDITOR))]


class PolicyProposal(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bundle: PolicyBundle
    note: str = Field(min_length=1, max_length=500, description="Why: kept in the history with the diff.")
    base_version: str | None = Field(
        max_length=200,
        description="The version in force the bundle was made from (`version` of GET /v1/admin/policy): "
        "refused with 409 if another is in force by now.",
    )


class ProposalDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=500, description="Why: kept in the policy history.")


class GrantProposal(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Name
    grant: Grant


def _change(change: Change) -> JSONResponse:
    body: dict[str, Any] = {"active": change.active, "proposal": change.proposal}
    return JSONResponse(body, status_code=200 if change.active else 202)


@router.get("/policy")
def policy(rt: RuntimeDep, _who: Reader) -> dict[str, Any]:
    """The bundle in force, open proposals, and the history of changes with their diffs."""
    state = policy_admin.current(rt)
    return {
        "version": state.bundle.version,
        "bundle": state.bundle.model_dump(mode="json"),
        "unavailable": state.unavailable,
        "proposals": list(rt.policy_store.proposals().values()),
        "history": rt.policy_store.history(),
    }


@router.put("/policy", status_code=202)
def propose_policy(rt: RuntimeDep, who: Admin, body: PolicyProposal) -> JSONResponse:
    """Propose a whole bundle made from `base_version`: 202 while it waits for approval, 200 once
    in force, 409 if another version is in force by now."""
    return _change(policy_admin.propose(rt, body.bundle, by=who.client_id, note=body.note, base=body.base_version))


@router.post("/policy/proposals/{proposal_id}/approve")
def approve_policy(rt: RuntimeDep, who: Admin, proposal_id: RecordIdPath) -> JSONResponse:
    """Approve another person's proposal; nobody approves their own, nor with a second account."""
    return _change(policy_admin.approve(rt, proposal_id, by=who.client_id))


def _decided(request: Request, decision: Decision) -> dict[str, Any]:
    note_record(request, decision.entry)  # the audit leaf digests the history entry, reason included
    return {"proposal": decision.proposal, "decision": decision.entry}


@router.post("/policy/proposals/{proposal_id}/reject")
def reject_policy(
    request: Request, rt: RuntimeDep, who: Admin, proposal_id: RecordIdPath, body: ProposalDecision
) -> dict[str, Any]:
    """Turn down another person's open proposal, for good (the proposer withdraws instead): 403
    for the proposer, 404 for no such proposal, 409 once it is decided."""
    return _decided(request, policy_admin.reject(rt, proposal_id, by=who.client_id, reason=body.reason))


@router.post("/policy/proposals/{proposal_id}/withdraw")
def withdraw_policy(
    request: Request, rt: RuntimeDep, who: Admin, proposal_id: RecordIdPath, body: ProposalDecision
) -> dict[str, Any]:
    """Take back one's own open proposal, for good: 403 for anyone but the proposer, 404 for no
    such proposal, 409 once it is decided."""
    return _decided(request, policy_admin.withdraw(rt, proposal_id, by=who.client_id, reason=body.reason))


@router.get("/grants")
def grants(rt: RuntimeDep, _who: Reader) -> dict[str, Any]:
    bundle = policy_admin.current(rt).bundle
    return {"grants": {gid: g.model_dump(mode="json") for gid, g in sorted(bundle.grants.items())}}


@router.get("/grants/{grant_id}")
def grant(rt: RuntimeDep, _who: Reader, grant_id: NamePath) -> dict[str, Any]:
    found = policy_admin.current(rt).bundle.grants.get(grant_id)
    if found is None:
        raise NotFound("grant: no grant of this id")
    return {"id": grant_id, "grant": found.model_dump(mode="json")}


@router.post("/grants", status_code=202)
def add_grant(rt: RuntimeDep, who: Admin, body: GrantProposal) -> JSONResponse:
    """A new grant is a policy change: validated, proposed, in force once approved."""
    return _change(policy_admin.add_grant(rt, body.id, body.grant, by=who.client_id))


@router.delete("/grants/{grant_id}")
def revoke_grant(
    rt: RuntimeDep, who: Admin, grant_id: NamePath, reason: Annotated[str, Query(min_length=1, max_length=500)]
) -> JSONResponse:
    """Revoke a grant: in force on the next request, in every process."""
    return _change(policy_admin.revoke_grant(rt, grant_id, by=who.client_id, reason=reason))
