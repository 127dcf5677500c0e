"""Steps 3 to 5 of a job: the approved code run in the sandbox, its outputs checked and released.

Only the exact code approved runs, and nothing of its outputs leaves without a check.
"""

from __future__ import annotations

import logging
from pathlib import Path

from gateway import sandbox_client
from gateway.domain.policy import check_not_frozen
from gateway.errors import InvalidRequest, VeilgateError
from gateway.jobs import Job
from gateway.services import policy_admin
from gateway.services.jobs.outputs import check_outputs
from gateway.services.jobs.release import release_document
from gateway.services.jobs.submission import job_files, service_of
from gateway.services.runtime import Runtime

log = logging.getLogger("veilgate.jobs")


def run(rt: Runtime, job_id: str) -> Job:
    """Steps 3 to 5. Never raises: the outcome, good or bad, is recorded on the job."""
    try:
        job = rt.jobs.claim_run(job_id)
    except VeilgateError:
        return rt.jobs.get(job_id)
    try:
        return _run(rt, job)
    except VeilgateError as refused:
        return rt.jobs.finish(job_id, status="failed", result=None, stdout="", stderr="", reason=str(refused))
    except Exception:
        log.exception("job %s failed (this is a bug)", job_id)
        return rt.jobs.finish(
            job_id, status="failed", result=None, stdout="", stderr="", reason="internal error; see the server log"
        )


def _run(rt: Runtime, job: Job) -> Job:
    policy = policy_admin.current(rt)
    bundle = policy.bundle
    service = service_of(bundle, job.service)
    # 3. Nothing it touches was stopped since its submission (raises Frozen, recorded as the reason);
    for dataset in job.datasets:
        check_not_frozen(
            rt.freezes.active(), consumer=job.submitter, organisation=job.organisation, service=job.service,
            dataset=dataset,
        )  # fmt: skip
    # and only the exact code approved runs.
    code, kind, recorded = rt.jobs.code_of(job.id)
    try:
        files, digest = job_files(code, kind)
    except (InvalidRequest, ValueError):
        files, digest = {}, ""
    approved = {r["code_sha256"] for r in job.reviews if r["decision"] == "approve"}
    if digest != recorded or approved != {recorded}:
        return rt.jobs.finish(
            job.id, status="failed", result=None, stdout="", stderr="",
            reason="the code is not the code that was approved; it was not run",
        )  # fmt: skip
    records = {d: rt.catalog.get(d) for d in job.datasets}
    banned = set(bundle.negative_list.columns)
    limits = service.limits

    def write_inputs(target: Path) -> None:
        for name, record in records.items():
            columns = [c.name for c in record.entry.columns if f"{name}.{c.name}" not in banned]
            with rt.domain.snapshot(name, record.version) as snapshot:
                snapshot.export(target / f"{name}.parquet", columns)

    outcome = sandbox_client.run(
        work_dir=rt.settings.state_dir / "jobs" / "runs",
        hide=sorted({rt.settings.state_dir.resolve(), rt.settings.data_path.resolve()}),
        files=files,
        write_inputs=write_inputs,
        limits=sandbox_client.Limits(**limits.model_dump()),
        unsafe_run_without_isolation=rt.settings.sandbox_unsafe_run_without_isolation,
    )
    entries = [r.entry for r in records.values()]
    # 4.
    results = check_outputs(rt, bundle, job, service=service, entries=entries, outcome=outcome)
    failed = outcome.timed_out or outcome.exit_code != 0
    reason = failure(outcome) if failed else None
    document = release_document(rt, job, results, outcome=outcome, reason=reason, policy_version=policy.version)
    status = "failed" if failed and not any(r["status"] == "released" for r in results.values()) else "finished"
    return rt.jobs.finish(
        job.id, status=status, result=document, stdout=outcome.stdout, stderr=outcome.stderr, reason=reason
    )


def failure(outcome: sandbox_client.Outcome) -> str:
    if outcome.timed_out:
        return "the job ran past its wall-clock limit and was stopped"
    if outcome.exit_code in (-9, 137, 1) and "sigprocmask" in outcome.stderr:
        return "the job used up its CPU time and was stopped"
    if "MemoryError" in outcome.stderr:
        return "the job ran out of memory"
    return f"the job exited with status {outcome.exit_code}; an administrator can see its error output"
