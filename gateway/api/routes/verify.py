"""Verification routes for business systems: one claim or a batch, answered per field, signed."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.api import hot_paths
from gateway.api.deps import reads_bearer_token
from gateway.api.hot_bodies import VerifyRequest, openapi_body
from gateway.api.schemas import NamePath, ReleasedResponse

router = APIRouter(tags=["verification"])


@router.post("/v1/verify/{service}", response_model=ReleasedResponse, openapi_extra=openapi_body(VerifyRequest))
@reads_bearer_token
async def verify(request: Request, service: NamePath) -> Response:
    """Answer each claim with match, no_match (or not_found, where the service says so) per field.

    Invalid claims get an error naming its index and field; the others are still answered.
    A tripped limit (429, Retry-After) refuses the whole request and counts nothing.
    """
    # Served by `hot_paths.HotPaths` before FastAPI routing; declared here for the API document.
    return await hot_paths.verify(request, service)
