"""Output checking routes: administrators other than the submitter see the held outputs of SDC
jobs with their code and log, and release or withhold each output with a reason."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool

from gateway.api.deps import require_role, runtime
from gateway.api.schemas import NamePath, RecordIdPath, ReviewRequest
from gateway.domain.principal import Principal, Role
from gateway.services import jobs
from gateway.services.runtime import Runtime

router = APIRouter(tags=["jobs"])
Checker = Annotated[Principal, Depends(require_role(Role.ADMIN))]


@router.get("/v1/admin/output-checks")
async def queue(rt: Annotated[Runtime, Depends(runtime)], who: Checker) -> dict[str, Any]:
    """Jobs whose outputs wait for output checkers, oldest first, with the outputs still waiting
    (not the caller's own jobs)."""
    return {"jobs": await run_in_threadpool(jobs.checker_queue, rt, who)}


@router.get("/v1/admin/output-checks/{job_id}")
async def show(rt: Annotated[Runtime, Depends(runtime)], who: Checker, job_id: RecordIdPath) -> dict[str, Any]:
    """A held job for its checkers: each output's values and source, the code, the log, the checks."""
    return await run_in_threadpool(jobs.checker_job, rt, who, job_id)


@router.post("/v1/admin/output-checks/{job_id}/{output}/{decision}")
async def decide(
    *,
    rt: Annotated[Runtime, Depends(runtime)],
    who: Checker,
    job_id: RecordIdPath,
    output: NamePath,
    decision: Literal["release", "withhold"],
    body: ReviewRequest,
) -> dict[str, Any]:
    """Release or withhold one held output, with a reason; the decision that completes the checks
    makes the signed result, which the researcher then sees."""
    return await run_in_threadpool(jobs.check_output, rt, who, job_id, output, decision=decision, reason=body.reason)
