"""The reviewers' pages: the job review queue (code, plan, hashes, reviews) and output checking
(each held output's values, the log, release or withhold per output).

SECURITY: as in `admin_pages`: the JSON API's own route functions after the same role check
(`admin`), a CSRF check before each decision; code, logs and reasons are shown escaped.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import RedirectResponse

from gateway.api.deps import runtime
from gateway.api.routes import jobs as job_routes
from gateway.api.routes import output_checks as check_routes
from gateway.api.schemas import NamePath, RecordIdPath, ReviewRequest
from gateway.console import session
from gateway.console.forms import parsed
from gateway.console.rendering import error_page, page
from gateway.domain.principal import Role
from gateway.errors import InvalidRequest, VeilgateError
from gateway.services.runtime import Runtime

router = APIRouter(prefix="/console/admin", include_in_schema=False)
RuntimeDep = Annotated[Runtime, Depends(runtime)]
Csrf = Annotated[str, Form(max_length=128)]
Reason = Annotated[str, Form(max_length=4000)]


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


@router.get("/jobs")
async def jobs_page(request: Request, rt: RuntimeDep) -> Response:
    try:
        who = session.require(request, Role.ADMIN)
        found = (await job_routes.list_jobs(rt, who))["jobs"]
        queue = (await check_routes.queue(rt, who))["jobs"]
    except VeilgateError as exc:
        return error_page(request, exc)
    waiting = [j for j in found if j["status"] == "submitted"]
    return page(request, "admin/jobs.html", jobs=found, waiting=waiting, checks=queue)


@router.get("/jobs/{job_id}")
async def job_page(request: Request, rt: RuntimeDep, job_id: RecordIdPath) -> Response:
    try:
        who = session.require(request, Role.ADMIN)
        job = await job_routes.inspect(rt, who, job_id)
    except VeilgateError as exc:
        return error_page(request, exc)
    return page(request, "admin/job.html", job=job, plan_text=_pretty(job.get("plan")) if job.get("plan") else "",
                result_text=_pretty(job.get("result")) if job.get("result") else "",
                done=request.query_params.get("done"))  # fmt: skip


@router.post("/jobs/{job_id}/{decision}")
async def review_job(
    *, request: Request, rt: RuntimeDep, job_id: RecordIdPath, decision: NamePath, reason: Reason, csrf: Csrf = ""
) -> Response:
    try:
        who = session.require(request, Role.ADMIN)
        session.check_csrf(request, csrf)
        body = parsed(ReviewRequest, {"reason": reason})
        if decision == "approve":
            await job_routes.approve(rt, who, job_id, body)
        elif decision == "reject":
            await job_routes.reject(rt, who, job_id, body)
        elif decision == "requeue":
            await job_routes.requeue(rt, who, job_id, body)
        else:
            raise InvalidRequest("decision: approve, reject or requeue")
    except VeilgateError as exc:
        return error_page(request, exc)
    return RedirectResponse(f"/console/admin/jobs/{job_id}?done={decision}", status_code=303)


@router.get("/output-checks/{job_id}")
async def output_check_page(request: Request, rt: RuntimeDep, job_id: RecordIdPath) -> Response:
    try:
        who = session.require(request, Role.ADMIN)
        job = await check_routes.show(rt, who, job_id)
    except VeilgateError as exc:
        return error_page(request, exc)
    outputs = {name: _pretty(value) for name, value in (job.get("outputs") or {}).items()}
    return page(request, "admin/output_check.html", job=job, outputs=outputs, done=request.query_params.get("done"))


@router.post("/output-checks/{job_id}/{output}/{decision}")
async def decide_output(
    *,
    request: Request,
    rt: RuntimeDep,
    job_id: RecordIdPath,
    output: NamePath,
    decision: NamePath,
    reason: Reason,
    csrf: Csrf = "",
) -> Response:
    try:
        who = session.require(request, Role.ADMIN)
        session.check_csrf(request, csrf)
        if decision not in ("release", "withhold"):
            raise InvalidRequest("decision: release or withhold")
        body = parsed(ReviewRequest, {"reason": reason})
        chosen: Literal["release", "withhold"] = "release" if decision == "release" else "withhold"
        await check_routes.decide(rt=rt, who=who, job_id=job_id, output=output, decision=chosen, body=body)
    except VeilgateError as exc:
        return error_page(request, exc)
    return RedirectResponse(f"/console/admin/output-checks/{job_id}?done={decision}", status_code=303)
