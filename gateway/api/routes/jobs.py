"""Job routes: researchers submit analysis code and follow it; administrators review it."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from gateway.api.auditing import note
from gateway.api.deps import principal, require_role, runtime
from gateway.api.schemas import JobRequest, RecordIdPath, ReviewRequest
from gateway.domain.principal import Principal, Role
from gateway.errors import InvalidRequest
from gateway.services import jobs
from gateway.services.runtime import Runtime

router = APIRouter(tags=["jobs"])
Admin = Annotated[Principal, Depends(require_role(Role.ADMIN))]


@router.post("/v1/jobs", status_code=201)
async def submit(
    request: Request,
    rt: Annotated[Runtime, Depends(runtime)],
    who: Annotated[Principal, Depends(principal)],
    body: JobRequest,
) -> JSONResponse:
    """Submit code to run next to the data; it waits for review, then runs in the sandbox."""
    try:
        archive = None if body.archive is None else base64.b64decode(body.archive, validate=True)
    except ValueError:
        raise InvalidRequest("archive: not base64") from None
    submission = jobs.Submission(
        service=body.service,
        purpose=body.purpose,
        code=body.code,
        archive=archive,
        datasets=body.datasets,
        outputs=body.outputs,
        epsilon=None if body.epsilon is None else str(body.epsilon),
        tables=body.tables,
    )
    job = await run_in_threadpool(jobs.submit, rt, who, submission)
    note(request, service=job.service)
    return JSONResponse(jobs.view(job, for_admin=False), status_code=201)


@router.get("/v1/jobs/{job_id}")
async def status(
    rt: Annotated[Runtime, Depends(runtime)], who: Annotated[Principal, Depends(principal)], job_id: RecordIdPath
) -> dict[str, Any]:
    """Your job: status, reviews (without names), and the signed result once it ran."""
    job = await run_in_threadpool(rt.jobs.get, job_id)
    return jobs.view(jobs.require_owner(job, who), for_admin=False)


@router.get("/v1/admin/jobs")
async def list_jobs(rt: Annotated[Runtime, Depends(runtime)], _who: Admin) -> dict[str, Any]:
    return {"jobs": [jobs.view(j, for_admin=False) for j in await run_in_threadpool(rt.jobs.recent)]}


@router.get("/v1/admin/jobs/{job_id}")
async def inspect(rt: Annotated[Runtime, Depends(runtime)], who: Admin, job_id: RecordIdPath) -> dict[str, Any]:
    """Everything about a job for its reviewers: the code, who reviewed, stdout and stderr (for
    the submitter's own person, what the researcher sees)."""
    return await run_in_threadpool(jobs.admin_view, rt, who, job_id)


@router.post("/v1/admin/jobs/{job_id}/approve")
async def approve(
    rt: Annotated[Runtime, Depends(runtime)], who: Admin, job_id: RecordIdPath, body: ReviewRequest
) -> dict[str, Any]:
    """Approve the code (by its hash); the last required approval starts the run."""
    return jobs.view(await run_in_threadpool(jobs.review, rt, who, job_id, "approve", body.reason), for_admin=True)


@router.post("/v1/admin/jobs/{job_id}/requeue")
async def requeue(
    rt: Annotated[Runtime, Depends(runtime)], who: Admin, job_id: RecordIdPath, body: ReviewRequest
) -> dict[str, Any]:
    """Run again a failed job that released nothing (its process stopped during the run, say)."""
    return jobs.view(await run_in_threadpool(jobs.requeue, rt, who, job_id, body.reason), for_admin=True)


@router.post("/v1/admin/jobs/{job_id}/reject")
async def reject(
    rt: Annotated[Runtime, Depends(runtime)], who: Admin, job_id: RecordIdPath, body: ReviewRequest
) -> dict[str, Any]:
    """Reject the code, with a reason the researcher sees."""
    return jobs.view(await run_in_threadpool(jobs.review, rt, who, job_id, "reject", body.reason), for_admin=True)
