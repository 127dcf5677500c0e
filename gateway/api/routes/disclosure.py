"""Public disclosure (no authentication): authorizations, the service list with prices, usage."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from gateway.api.deps import runtime
from gateway.services import disclosure, policy_admin
from gateway.services.runtime import Runtime

router = APIRouter(prefix="/v1/disclosure", tags=["disclosure"])
RuntimeDep = Annotated[Runtime, Depends(runtime)]


@router.get("/authorizations")
def authorizations(rt: RuntimeDep) -> dict[str, Any]:
    """Who is authorized to use which public data, for what content, scope and term."""
    return {"policy_version": policy_admin.current(rt).version, "authorizations": disclosure.authorizations(rt)}


@router.get("/services")
def services(rt: RuntimeDep) -> dict[str, Any]:
    """The products and services on offer, what each answers, and its price and price cap."""
    return {"policy_version": policy_admin.current(rt).version, "services": disclosure.services(rt)}


@router.get("/usage")
def usage(rt: RuntimeDep) -> dict[str, Any]:
    """Per service and month: calls, claims, releases charged, and privacy budget spent per dataset."""
    return {"usage": disclosure.usage(rt)}
