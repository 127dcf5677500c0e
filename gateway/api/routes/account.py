"""Routes about the caller itself."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from gateway.api.deps import principal
from gateway.api.schemas import MeResponse
from gateway.domain.principal import Principal

router = APIRouter(tags=["authentication"])


@router.get("/v1/me", response_model=MeResponse)
def me(who: Annotated[Principal, Depends(principal)]) -> MeResponse:
    """Who the access token says you are: check a token before calling a service."""
    return MeResponse(client_id=who.client_id, organisation=who.organisation, roles=sorted(r.value for r in who.roles))
