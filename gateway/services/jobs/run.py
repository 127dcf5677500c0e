"""Steps 3 to 5 of a job: the claimed run, whichever it is, and its outcome recorded.

A job waiting for its plan (`planning`) gets its plan run on the synthetic sample; an approved
job of a DP service gets its approved plan computed by the gateway (`dp_run`); an approved job
of an SDC service runs in the sandbox on its datasets and its tables are checked. Every outcome
is recorded by a compare-and-swap on the job's state and attempt (`JobStore.finish`), so a run
that lost its job (failed as overdue, then requeued) cannot overwrite it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from gateway import sandbox_client
from gateway.domain.job_vocabulary import Reason
from gateway.errors import Conflict, InvalidRequest, VeilgateError
from gateway.observability.logs import bare_trace
from gateway.services import policy_admin
from gateway.services.jobs.authorization import stopped
from gateway.services.jobs.dispatch import runs_dir
from gateway.services.jobs.dp_run import run_approved_plan
from gateway.services.jobs.outputs import check_outputs
from gateway.services.jobs.planning import failure, run_plan
from gateway.services.jobs.release import release_document
from gateway.services.jobs.stored import job_files, service_of
from gateway.services.needs import (
    HasAudit,
    HasBudget,
    HasCatalog,
    HasClients,
    HasDomain,
    HasFreezes,
    HasJobs,
    HasOnnx,
    HasPolicy,
    HasPolicyStore,
    HasReceiptKeys,
    HasSettings,
)
from gateway.state.ports import Job


class RunNeeds(
    HasPolicy,
    HasPolicyStore,
    HasCatalog,
    HasOnnx,
    HasBudget,
    HasAudit,
    HasReceiptKeys,
    HasSettings,
    HasDomain,
    HasFreezes,
    HasClients,
    HasJobs,
    Protocol,
):
    """A whole job run, from its plan to its release: what each step needs (`DpRunNeeds`,
    `OutputCheckingNeeds`, `PlanningNeeds`, `DispatchNeeds`), which it passes on."""


log = logging.getLogger("veilgate.jobs")

HOLD_MARGIN_SECONDS = 5.0
"""Beyond the wall-clock limit from when a run's inputs were ready: starting its jail, killing
and reaping it at the limit, and checking its outputs (a table of 10,000 cells with secondary
suppression takes tens of milliseconds a count column, whatever counts the job chose). A run
whose checks end later than the limit plus this is recorded at the next `HOLD_STEP_SECONDS`."""
HOLD_POLL_SECONDS = 0.5
HOLD_STEP_SECONDS = 30.0
"""A run whose checks end after its hold is recorded at the next multiple of this past the hold:
how far it overran then tells a few steps, not the time to the millisecond."""


def release_time(not_before: float, checked: float) -> float:
    """When to record a run whose outputs were checked at `checked` (time.monotonic)."""
    if checked <= not_before:
        return not_before
    return not_before + math.ceil((checked - not_before) / HOLD_STEP_SECONDS) * HOLD_STEP_SECONDS


def hold_until(not_before: float, should_stop: Callable[[], object]) -> None:
    """Wait until `not_before` (time.monotonic) unless `should_stop` says something first: a
    freeze, a revoke or a withdrawn service is an administrator's act, not the data's, and the
    run is then recorded as stopped at once."""
    while (left := not_before - time.monotonic()) > 0:
        if should_stop() is not None:
            return
        time.sleep(min(left, HOLD_POLL_SECONDS))


def run(rt: RunNeeds, job_id: str) -> Job:
    """Claim the job's next step and run it. Never raises: the outcome, good or bad, is recorded
    on the job (with a reason from the vocabulary; details are logged for administrators)."""
    try:
        waiting = rt.jobs.get(job_id)
        job = rt.jobs.claim_plan(job_id) if waiting.status == "planning" else rt.jobs.claim_run(job_id)
    except VeilgateError:
        return rt.jobs.get(job_id)
    try:
        return run_plan(rt, job) if job.status == "planning-run" else _run(rt, job)
    except Conflict:  # the job was failed or requeued meanwhile: this run's outcome is not recorded
        log.warning("job %s changed during its run (attempt %d); its outcome was dropped", job_id, job.attempt)
    except VeilgateError as refused:
        log.warning("job %s refused during its run: %s", job_id, refused.detail)
        _fail(rt, job, Reason.ERROR)
    except Exception as exc:  # its text may quote a value the run read: type and place only
        log.error("job %s failed (this is a bug)\n%s", job_id, bare_trace(exc))
        _fail(rt, job, Reason.INTERNAL)
    return rt.jobs.get(job_id)


def _fail(rt: RunNeeds, job: Job, reason: Reason, *, stdout: str = "", stderr: str = "") -> Job:
    try:
        return rt.jobs.finish(job, status="failed", result=None, stdout=stdout, stderr=stderr, reason=reason.value)
    except Conflict:
        return rt.jobs.get(job.id)


def _run(rt: RunNeeds, job: Job) -> Job:
    policy = policy_admin.current(rt)
    bundle = policy.bundle
    # 3. Nothing it touches was stopped since its submission, its grant still holds;
    reason = stopped(rt, job)
    if reason is not None:
        return _fail(rt, job, reason)
    service = service_of(bundle, job.service)
    if service.output_check == "dp":
        return run_approved_plan(rt, job, bundle, policy.version)
    # and only the exact code approved runs.
    code, kind, recorded = rt.jobs.code_of(job.id)
    try:
        files, digest = job_files(code, kind)
    except (InvalidRequest, ValueError):
        files, digest = {}, ""
    approved = {r["code_sha256"] for r in job.reviews if r["decision"] == "approve"}
    if digest != recorded or approved != {recorded}:
        return _fail(rt, job, Reason.CODE_NOT_APPROVED)
    records = {d: rt.catalog.get(d) for d in job.datasets}
    banned = set(bundle.negative_list.columns)

    inputs_ready: list[float] = []

    def write_inputs(target: Path) -> None:
        for name, record in records.items():
            columns = [c.name for c in record.entry.columns if f"{name}.{c.name}" not in banned]
            with rt.domain.snapshot(name, record.version) as snapshot:
                snapshot.export(target / f"{name}.parquet", columns)
        inputs_ready.append(time.monotonic())

    outcome = sandbox_client.run(
        work_dir=runs_dir(rt),
        files=files,
        write_inputs=write_inputs,
        limits=sandbox_client.Limits(**service.limits.model_dump()),
        unsafe_run_without_isolation=rt.settings.sandbox_unsafe_run_without_isolation,
        should_stop=lambda: None if (why := stopped(rt, job)) is None else why.value,  # a freeze kills it
        job_uids=rt.settings.sandbox_job_uids,
    )
    # SECURITY: when a run ends is the job's choice (it may sleep until a time computed from the
    # data), and so is how long its outputs take to check (the tables it writes): nothing of its
    # outcome is recorded, and its status stays `running`, until its wall-clock limit (and a
    # margin for checking) has passed from when its inputs were ready. Every run that keeps to its
    # limit ends, as far as anyone outside the worker can tell, at the same time.
    started = inputs_ready[0] if inputs_ready else time.monotonic()
    not_before = started + service.limits.wall_seconds + HOLD_MARGIN_SECONDS
    # SECURITY: authorization again before the data is read for the checks and before anything
    # is released: a freeze, a revoke or a withdrawn service during the run releases nothing
    # (an administrator's act, recorded at once).
    reason = stopped(rt, job)
    if reason is not None or not rt.jobs.is_current(job):
        return _fail(rt, job, reason or Reason.PROCESS_STOPPED, stdout=outcome.stdout, stderr=outcome.stderr)
    # 4.
    entries = [r.entry for r in records.values()]
    try:
        results, notes = check_outputs(rt, job, service=service, entries=entries, outcome=outcome)
    finally:  # a check that fails is recorded no earlier than one that passes
        hold_until(release_time(not_before, time.monotonic()), lambda: stopped(rt, job))
    reason = stopped(rt, job)
    if reason is not None or not rt.jobs.is_current(job):
        return _fail(rt, job, reason or Reason.PROCESS_STOPPED, stdout=outcome.stdout, stderr=outcome.stderr)
    failed = failure(outcome)
    said = None if failed is None else failed.value
    if any(r["status"] == "held" for r in results.values()):  # tables wait for two output checkers
        # the reasons stay with the checkers until they decide: the job's code chose them
        held = {"outputs": results, "isolation": outcome.isolation, "reason": said}
        return rt.jobs.hold(job, held=held, stdout=outcome.stdout, stderr=outcome.stderr, reason=None, notes=notes)
    # 5. SECURITY: nothing passed, so no checker looks: which rule refused each table, and why the
    # run failed, are the job's choice (a few bits a table, from the data), and reach the
    # reviewers only. The researcher sees one reason for all, and whether the run completed.
    notes = [*notes, *(f"{name}: {r.get('reason')}" for name, r in results.items()), f"run: {said or 'completed'}"]
    said = None if failed is None else Reason.ERROR.value
    results = {name: {"status": "withheld", "reason": Reason.NOTHING_PASSED.value} for name in results}
    document = release_document(rt, job, results, isolation=outcome.isolation, reason=said,
                                 policy_version=policy.version)  # fmt: skip
    status = "failed" if failed and not any(r["status"] == "released" for r in results.values()) else "finished"
    return rt.jobs.finish(
        job, status=status, result=document, stdout=outcome.stdout, stderr=outcome.stderr, reason=said, notes=notes
    )
