"""The real run of a DP job: the approved plan computed by the gateway; no job code runs.

1. the approvals cover this code and this plan (their hashes), and the plan is the one stored;
2. each planned output is checked again under the policy in force (as at planning) and compiled
   by the aggregate planner at the dataset's current version;
3. authorization again (freezes, grant, service): a change since the start releases nothing;
4. the statistics are charged and computed like aggregates: the same question is answered from
   its stored release, charged once;
5. one signed, audited document.
"""

from __future__ import annotations

import functools
from typing import Protocol

from gateway.domain.aggregate import Plan
from gateway.domain.job_plan import Planned, Refused, check_request, compile_planned, plan_sha256
from gateway.domain.job_vocabulary import Reason, Refusal
from gateway.domain.policy import PolicyBundle
from gateway.domain.trail import Json
from gateway.errors import VeilgateError
from gateway.services import aggregate, charging
from gateway.services.aggregate import AggregateNeeds
from gateway.services.jobs.authorization import StopNeeds, stopped
from gateway.services.jobs.release import JobReleaseNeeds, release_document
from gateway.services.needs import HasJobs
from gateway.state.ports import Job


class DpRunNeeds(AggregateNeeds, StopNeeds, JobReleaseNeeds, HasJobs, Protocol):
    """An approved DP plan run: the aggregate and charging steps, and the job store."""


ISOLATION = "none needed: the gateway computed the approved plan; no job code ran on the data"


def run_approved_plan(rt: DpRunNeeds, job: Job, bundle: PolicyBundle, policy_version: str) -> Job:
    """Steps 1 to 5 for a claimed job (`JobStore.claim_run`) of a DP service."""
    # 1.
    approved = {(r["code_sha256"], r.get("plan_sha256")) for r in job.reviews if r["decision"] == "approve"}
    if job.plan is None or job.plan_sha256 != plan_sha256(job.plan) or approved != {(job.code_sha256, job.plan_sha256)}:
        return _fail(rt, job, Reason.PLAN_NOT_APPROVED)
    # 2.
    results: dict[str, Json] = {}
    notes: list[str] = []
    compiled: list[tuple[str, Plan]] = []
    banned = set(bundle.negative_list.columns)
    for stored in job.plan:
        name = str(stored["name"])
        if stored.get("status") != "planned":
            results[name] = {k: stored[k] for k in ("status", "reason", "parameter") if k in stored}
            continue
        planned = Planned.from_stored(stored)
        record = rt.catalog.get(planned.dataset)
        request = {"kind": "dp", **planned.stored()}
        del request["name"], request["epsilon"]
        outcome = check_request(name, request, record.entry, banned, planned.epsilon)
        try:
            if not isinstance(outcome, Planned):
                raise Refused(outcome)
            compiled.append((name, compile_planned(planned, record.entry, record.version)))
        except Refused as refused:
            results[name] = refused.refusal.shown()
            notes.append(f"{name}: {refused.refusal.reason.value}: {refused.refusal.detail}")
    # 3.
    reason = stopped(rt, job)
    if reason is not None:
        return _fail(rt, job, reason)
    # 4.
    if compiled:
        results |= _charge(rt, bundle, job, compiled, notes)
    reason = stopped(rt, job)
    if reason is not None or not rt.jobs.is_current(job):
        return _fail(rt, job, reason or Reason.PROCESS_STOPPED)
    # 5.
    ordered = {name: results[name] for name in job.outputs if name in results}
    document = release_document(rt, job, ordered, isolation=ISOLATION, reason=None, policy_version=policy_version)
    return rt.jobs.finish(
        job,
        status="finished",
        result=document,
        stdout=job.stdout or "",
        stderr=job.stderr or "",
        reason=None,
        notes=[*(job.notes or []), *notes],
    )


def _charge(
    rt: DpRunNeeds, bundle: PolicyBundle, job: Job, compiled: list[tuple[str, Plan]], notes: list[str]
) -> dict[str, Json]:
    charges = [
        charging.Charge(
            plan.key,  # the same question as any other: one answer, charged once
            plan.amount,
            bundle.budget_accounts(
                grant_id=job.grant_id,
                consumer=job.submitter,
                organisation=job.organisation,
                dataset=plan.dataset,
                version=plan.version,
            ),
            functools.partial(aggregate.compute, rt, plan),
            service=job.service,
        )
        for _name, plan in compiled
    ]
    try:
        released = charging.run(rt, charges)
    except VeilgateError as refused:
        notes.append(f"not charged: {refused.detail}")
        return {name: Refusal(Reason.BUDGET).shown() for name, _plan in compiled}
    return {
        name: {"status": "released", "kind": "dp", **result, "replayed": not paid}
        for (name, _plan), (result, paid) in zip(compiled, released, strict=True)
    }


def _fail(rt: DpRunNeeds, job: Job, reason: Reason) -> Job:
    return rt.jobs.finish(
        job, status="failed", result=None, stdout=job.stdout or "", stderr=job.stderr or "", reason=reason.value
    )
