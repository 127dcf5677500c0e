"""The trust core's public face: signing keys, checkpoints, proofs; and the audit trail for auditors.

Public routes need no token: anyone may fetch the keys, keep checkpoints as a witness and ask
for proofs. Proofs carry hashes only. A leaf itself is shown to the principal it records and
to auditors and administrators; to anyone else it does not exist.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.deps import principal, require_role, runtime
from gateway.api.schemas import (
    AuditPageResponse,
    CheckpointListResponse,
    CheckpointResponse,
    ConsistencyProofResponse,
    InclusionProofResponse,
    JwksResponse,
    PositionPath,
)
from gateway.domain.names import CLIENT_ID_PATTERN, MAX_POSITION, Identifier, Name
from gateway.domain.principal import Principal, Role
from gateway.domain.trail import AuditLeaf, Decision, timestamp
from gateway.errors import InvalidRequest, NotFound
from gateway.services.runtime import Runtime
from gateway.state.ports import LeafFilter

router = APIRouter(tags=["trust"])
RuntimeDep = Annotated[Runtime, Depends(runtime)]


@router.get("/.well-known/jwks.json", response_model=JwksResponse, response_model_exclude_none=True)
def jwks(rt: RuntimeDep) -> JwksResponse:
    """Public keys that sign receipts and checkpoints, retired and revoked ones included."""
    rt.receipt_keys.refresh()
    return JwksResponse.model_validate(rt.receipt_keys.jwks())


@router.get("/v1/audit/checkpoints", response_model=CheckpointListResponse)
def checkpoints(
    rt: RuntimeDep,
    after_size: Annotated[int, Query(ge=-1, le=MAX_POSITION, description="Only checkpoints larger than this.")] = -1,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> CheckpointListResponse:
    """Signed tree heads, smallest first: keep copies to witness that the log is never rewritten."""
    found = rt.audit.checkpoints(after_size=after_size, limit=limit)
    return CheckpointListResponse(
        tree_size=rt.audit.size(),
        checkpoints=[CheckpointResponse.model_validate(c.model_dump()) for c in found],
    )


def _check_size(rt: Runtime, name: str, size: int) -> None:
    current = rt.audit.size()
    if size > current:
        raise InvalidRequest(f"{name}: beyond the log, which holds {current} leaves")


@router.get("/v1/audit/proof/inclusion", response_model=InclusionProofResponse)
def inclusion_proof(
    rt: RuntimeDep,
    leaf: Annotated[int, Query(ge=0, le=MAX_POSITION, description="The leaf's position (a receipt's `audit_seq`).")],
    size: Annotated[int, Query(ge=1, le=MAX_POSITION, description="Tree size, normally that of a signed checkpoint.")],
) -> InclusionProofResponse:
    """RFC 9162 audit path from one leaf to the root of the tree of `size` leaves."""
    _check_size(rt, "size", size)
    if leaf >= size:
        raise InvalidRequest("leaf: must be smaller than size")
    leaf_hash, path = rt.audit.inclusion_proof(leaf, size)
    return InclusionProofResponse(
        leaf_index=leaf,
        tree_size=size,
        leaf_hash=leaf_hash.hex(),
        root=rt.audit.root(size).hex(),
        audit_path=[h.hex() for h in path],
    )


@router.get("/v1/audit/proof/consistency", response_model=ConsistencyProofResponse)
def consistency_proof(
    rt: RuntimeDep,
    first: Annotated[int, Query(ge=1, le=MAX_POSITION, description="The older tree size (a checkpoint you kept).")],
    second: Annotated[int, Query(ge=1, le=MAX_POSITION, description="The newer tree size.")],
) -> ConsistencyProofResponse:
    """RFC 9162 proof that the tree of `first` leaves is a prefix of the tree of `second`."""
    _check_size(rt, "second", second)
    if first > second:
        raise InvalidRequest("first: must not be larger than second")
    return ConsistencyProofResponse(
        first=first,
        second=second,
        first_root=rt.audit.root(first).hex(),
        second_root=rt.audit.root(second).hex(),
        proof=[h.hex() for h in rt.audit.consistency_proof(first, second)],
    )


@router.get("/v1/audit/leaves/{seq}", response_model=AuditLeaf)
def audit_leaf(rt: RuntimeDep, who: Annotated[Principal, Depends(principal)], seq: PositionPath) -> AuditLeaf:
    """One leaf, to recompute its hash for an inclusion proof: your own requests only."""
    found = rt.audit.leaf(seq) if seq >= 0 else None
    may_read = who.has_role(Role.AUDITOR) or who.has_role(Role.ADMIN)
    if found is None or not (may_read or found.principal == who.client_id):
        raise NotFound("seq: no audit leaf of yours at this position")
    return found


class AuditQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: str | None = Field(None, description="RFC 3339 time, inclusive, e.g. 2026-11-01T00:00:00Z.")
    until: str | None = Field(None, description="RFC 3339 time, exclusive.")
    principal: str | None = Field(None, pattern=CLIENT_ID_PATTERN)
    service: Name | None = None
    dataset: Identifier | None = None
    decision: Decision | None = None
    after: int = Field(-1, ge=-1, le=MAX_POSITION, description="Page cursor: leaves after this position.")
    limit: int = Field(100, ge=1, le=1000)


@router.get("/v1/admin/audit", response_model=AuditPageResponse, tags=["administration"])
def audit_search(
    rt: RuntimeDep,
    _who: Annotated[Principal, Depends(require_role(Role.AUDITOR, Role.ADMIN))],
    query: Annotated[AuditQuery, Query()],
) -> AuditPageResponse:
    """The audit trail, filtered and paged, oldest first."""
    where = LeafFilter(
        since=_utc(query.since, "since"),
        until=_utc(query.until, "until"),
        principal=query.principal,
        service=query.service,
        dataset=query.dataset,
        decision=query.decision,
    )
    leaves = rt.audit.find(where, after=query.after, limit=query.limit)
    return AuditPageResponse(leaves=leaves, next_after=leaves[-1].seq if len(leaves) == query.limit else None)


def _utc(value: str | None, name: str) -> str | None:
    """Normalise to the log's own timestamp form, so string order is time order."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"{name}: not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        raise InvalidRequest(f"{name}: give a time zone, e.g. Z")
    return timestamp(parsed)
