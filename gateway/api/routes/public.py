"""Public routes: health, token, and the data resource directory. No data value leaves here."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request

from gateway.api.auditing import note
from gateway.api.deps import runtime
from gateway.api.schemas import (
    CatalogDetailResponse,
    CatalogListResponse,
    DatasetPath,
    HealthResponse,
    ReadinessResponse,
    SampleResponse,
    TokenResponse,
)
from gateway.errors import InvalidRequest, NotReady
from gateway.services import authentication, catalog_view
from gateway.services.runtime import Runtime
from gateway.services.token_throttle import TokenThrottle

router = APIRouter()
RuntimeDep = Annotated[Runtime, Depends(runtime)]


@router.get("/healthz", response_model=HealthResponse, tags=["operations"])
async def healthz() -> HealthResponse:
    """Alive: the process answers. No work at all (async, no thread hop): the baseline of the load benchmarks."""
    return HealthResponse(status="ok")


@router.get("/readyz", response_model=ReadinessResponse, tags=["operations"])
def readyz(rt: RuntimeDep) -> ReadinessResponse:
    """Ready: keys loaded and every served dataset's version present in the domain."""
    served = [r for r in rt.catalog.records() if r.is_served]
    for record in served:
        try:
            with rt.domain.snapshot(record.entry.dataset, record.version):
                pass
        except Exception as exc:  # any failure to open means not ready, whatever its kind
            raise NotReady(f"dataset {record.entry.dataset} cannot be opened") from exc
    return ReadinessResponse(status="ready", datasets_served=len(served), token_keys=len(rt.token_keys.keys))


@router.post("/v1/token", response_model=TokenResponse, tags=["authentication"])
def token(
    request: Request,
    rt: RuntimeDep,
    grant_type: Annotated[str, Form()],
    client_id: Annotated[str, Form(max_length=128)],
    client_secret: Annotated[str, Form(max_length=256)],
) -> TokenResponse:
    """OAuth2 client credentials grant: a short-lived EdDSA-signed JWT."""
    if grant_type != "client_credentials":
        raise InvalidRequest("grant_type must be client_credentials")
    grant = grant_token(request, rt, client_id, client_secret, audience=rt.settings.audience)
    return TokenResponse(access_token=grant.access_token, expires_in=grant.expires_in)


def grant_token(
    request: Request, rt: Runtime, client_id: str, client_secret: str, *, audience: str
) -> authentication.TokenGrant:
    """A token for `audience` (the API's, or the console's): throttled, checked and noted in the
    audit log alike, whichever asks."""
    # Before the secret is hashed (scrypt): see `token_throttle`.
    throttle: TokenThrottle = request.app.state.token_throttle
    throttle.admit(client_id, request.client.host if request.client else "unknown")
    grant = authentication.issue_token(
        rt.clients,
        rt.token_keys,
        client_id,
        client_secret,
        issuer=rt.settings.issuer,
        audience=audience,
        ttl_seconds=rt.settings.token_ttl_seconds,
    )
    note(request, client=(grant.client_id, grant.organisation))
    return grant


@router.get("/v1/catalog", response_model=CatalogListResponse, tags=["catalogue"])
def catalog_list(rt: RuntimeDep) -> CatalogListResponse:
    return CatalogListResponse.model_validate({"datasets": catalog_view.list_public(rt.catalog)})


@router.get("/v1/catalog/{dataset}", response_model=CatalogDetailResponse, tags=["catalogue"])
def catalog_detail(request: Request, rt: RuntimeDep, dataset: DatasetPath) -> CatalogDetailResponse:
    found = catalog_view.detail(rt.catalog.get(dataset))
    note(request, dataset=dataset)
    return CatalogDetailResponse.model_validate(found)


@router.get("/v1/catalog/{dataset}/sample", response_model=SampleResponse, tags=["catalogue"])
def catalog_sample(
    request: Request,
    rt: RuntimeDep,
    dataset: DatasetPath,
    rows: Annotated[int, Query(ge=1, le=catalog_view.MAX_SAMPLE_ROWS)] = 20,
    seed: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> SampleResponse:
    """Synthetic mock rows made from the public catalogue entry alone, for development."""
    made = catalog_view.sample(rt.catalog, dataset, rows, seed)
    note(request, dataset=dataset)
    return SampleResponse(dataset=dataset, rows=made)
