"""Step 2 of a job: reviews by administrators, a requeue after a stopped run, and what each
audience sees of a job (the submitter never sees reviewer names, code, logs or raw outputs)."""

from __future__ import annotations

from typing import Protocol

from gateway.domain.principal import Principal
from gateway.domain.trail import Json
from gateway.errors import NotFound
from gateway.services import policy_admin
from gateway.services.jobs.authorization import refuse_the_submitters_maker
from gateway.services.jobs.planning import total_epsilon
from gateway.services.jobs.stored import readable_files, service_of
from gateway.services.needs import HasClients, HasJobs
from gateway.services.policy_admin import PolicyReader
from gateway.state.ports import Job


class ReviewNeeds(PolicyReader, HasClients, HasJobs, Protocol):
    """Reviews and requeues: the bundle, who reviews, the job store."""


def review(rt: ReviewNeeds, reviewer: Principal, job_id: str, decision: str, reason: str) -> Job:
    """Step 2; the review that completes the approvals makes the job `runnable` for the worker."""
    job = rt.jobs.get(job_id)
    refuse_the_submitters_maker(rt, job, reviewer.client_id, "reviews")
    service = service_of(policy_admin.current(rt).bundle, job.service)
    return rt.jobs.review(
        job_id, reviewer.client_id, decision, reason, service.reviewers, identity_of=rt.clients.identity_of
    )


REQUEUERS = 2
"""Administrators of different identities who must ask before a failed job runs again."""


def requeue(rt: ReviewNeeds, admin: Principal, job_id: str, reason: str) -> Job:
    """Run again a failed job that released nothing (`JobStore.requeue`) once administrators of
    two identities asked (SECURITY: a run reads the data again; one administrator alone must not
    be able to make it); the worker picks it up."""
    refuse_the_submitters_maker(rt, rt.jobs.get(job_id), admin.client_id, "requeues")
    return rt.jobs.requeue(job_id, admin.client_id, reason, needed=REQUEUERS, identity_of=rt.clients.identity_of)


def view(job: Job, *, for_admin: bool) -> Json:
    """What the submitter sees (no reviewer names, no raw output, reasons from the vocabulary), or
    everything for admins: the code and, for a DP service, the plan beside it with its total
    epsilon; reviews with the hashes they approved; the notes, stdout and stderr."""
    body: Json = {
        "id": job.id,
        "service": job.service,
        "purpose": job.purpose,
        "status": job.status,
        "code_sha256": job.code_sha256,
        "datasets": job.datasets,
        "outputs": job.outputs,
        "epsilon": job.epsilon,
        # output checks are for administrators: the researcher sees their outcome in the result
        "reviews": [
            {"decision": r["decision"], "reason": r["reason"], "at": r["at"]} for r in job.reviews if "output" not in r
        ],
        "reason": job.reason,
        "plan": job.plan,
        "plan_sha256": job.plan_sha256,
        "plan_epsilon": None if job.plan is None else total_epsilon(job.plan),
        "result": job.result,
        "created": job.created,
        "updated": job.updated,
    }
    if for_admin:
        body |= {"submitter": job.submitter, "organisation": job.organisation, "code": job.code,
                 "code_kind": job.code_kind, "files": readable_files(job.code, job.code_kind),
                 "reviews": job.reviews, "stdout": job.stdout, "stderr": job.stderr,
                 "notes": job.notes or []}  # fmt: skip
    return body


def is_own(rt: HasClients, who: Principal, job: Job) -> bool:
    """`who` is the submitter's person (one of their accounts), or made the submitter's account.

    SECURITY: an administrator who made an account may have invented its person, so what output
    checking holds back from that account (the log, the notes, the held outcome) is held back
    from its maker as well (`authorization.refuse_the_submitters_maker` keeps them out of the
    decisions)."""
    identity = rt.clients.identity_of(who.client_id)
    account = rt.clients.find(job.submitter)
    maker = None if account is None else account.maker_identity
    return identity == rt.clients.identity_of(job.submitter) or (maker is not None and maker == identity)


def admin_view(rt: ReviewNeeds, who: Principal, job_id: str) -> Json:
    """Everything about a job for an administrator, except one of the submitter's own person
    (SECURITY: their administrator account must not read the log, the notes or the outcome that
    output checking holds back from their researcher account): the researcher's view."""
    job = rt.jobs.get(job_id)
    return view(job, for_admin=not is_own(rt, who, job))


def require_owner(job: Job, principal: Principal) -> Job:
    if job.submitter != principal.client_id:
        raise NotFound(f"no job {job.id}")  # another's job does not exist for you
    return job
