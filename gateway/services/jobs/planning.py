"""A DP job's plan run: its code on the synthetic sample only, and what it asked for, checked.

SECURITY: the code of a job on a DP service never meets a real record. It runs here, in the
sandbox, on the synthetic sample (the one `veilgate jobs run-local` gives), and the DP outputs
it asks for become its plan, checked as templates are (`domain.job_plan`). Reviewers approve the
code and the plan; the real run computes the approved plan in the gateway and runs no code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from gateway import sandbox_client
from gateway.domain.aggregate import epsilon_text
from gateway.domain.budget import micro_epsilon
from gateway.domain.catalog import CatalogEntry
from gateway.domain.job_plan import Planned, check_request, plan_sha256, read_requests, share_of
from gateway.domain.job_vocabulary import Reason, Refusal
from gateway.domain.policy import PolicyBundle
from gateway.services import policy_admin
from gateway.services.jobs.sample import sample_inputs
from gateway.services.jobs.stored import job_files, service_of
from gateway.services.needs import HasJobs, HasSettings
from gateway.services.policy_admin import PolicyReader
from gateway.state.ports import Job


class PlanningNeeds(PolicyReader, HasJobs, HasSettings, Protocol):
    """A plan run: the bundle, the catalogue, the job store, the sandbox settings."""


def make_plan(
    bundle: PolicyBundle, job: Job, entries: Sequence[CatalogEntry], produced: Mapping[str, Any]
) -> tuple[list[dict[str, Any]], list[str]]:
    """The plan as stored: each declared output, planned or withheld with its refusal; and the
    details for reviewers. Epsilon is split equally over the outputs that asked for a statistic."""
    by_name = {e.dataset: e for e in entries}
    requests, refused, notes = read_requests(produced, job.outputs, [e.dataset for e in entries])
    share = share_of(micro_epsilon(job.epsilon or "0.000001"), len(requests))
    banned = set(bundle.negative_list.columns)
    checked: dict[str, Planned | Refusal] = dict(refused)
    for name, request in requests:
        checked[name] = check_request(name, request, by_name[str(request["dataset"])], banned, share)
    stored: list[dict[str, Any]] = []
    for name in job.outputs:
        outcome = checked[name]
        if isinstance(outcome, Planned):
            stored.append({**outcome.stored(), "status": "planned"})
        else:
            stored.append({"name": name, **outcome.shown()})
            if outcome.detail:
                notes.append(f"{name}: {outcome.reason.value} ({outcome.parameter or '-'}): {outcome.detail}")
    return stored, notes


def planned_of(plan: Sequence[Mapping[str, Any]]) -> list[Planned]:
    return [Planned.from_stored(p) for p in plan if p.get("status") == "planned"]


def total_epsilon(plan: Sequence[Mapping[str, Any]]) -> str:
    """What the plan would spend if no output were answered from a stored release."""
    return epsilon_text(sum(micro_epsilon(p.epsilon) for p in planned_of(plan)))


def run_plan(rt: PlanningNeeds, job: Job) -> Job:
    """The claimed plan run (`JobStore.claim_plan`): the code on the sample, the plan stored with
    its hash, and the job waits for its reviews. A job that fails here fails with a reason from
    the vocabulary; its error output is for reviewers."""
    bundle = policy_admin.current(rt).bundle
    service = service_of(bundle, job.service)
    entries = [rt.catalog.get(d).entry for d in job.datasets]
    files, _digest = job_files(job.code, job.code_kind)
    outcome = sandbox_client.run(
        work_dir=rt.settings.state_dir / "jobs" / "runs",
        files=files,
        write_inputs=sample_inputs(entries),
        limits=sandbox_client.Limits(**service.limits.model_dump()),
        unsafe_run_without_isolation=rt.settings.sandbox_unsafe_run_without_isolation,
        job_uids=rt.settings.sandbox_job_uids,
    )
    reason = failure(outcome)
    if reason is not None:
        return rt.jobs.finish(job, status="failed", result=None, stdout=outcome.stdout, stderr=outcome.stderr,
                              reason=reason.value)  # fmt: skip
    plan, notes = make_plan(bundle, job, entries, outcome.outputs or {})
    return rt.jobs.finish(
        job, status="submitted", result=None, stdout=outcome.stdout, stderr=outcome.stderr, reason=None,
        notes=notes, plan=plan, plan_sha256=plan_sha256(plan),
    )  # fmt: skip


def failure(outcome: sandbox_client.Outcome) -> Reason | None:
    """Why a run did not complete, in the vocabulary; None if it did. The exit status and the
    error output are for reviewers only."""
    if outcome.timed_out:
        return Reason.TIME_LIMIT
    if outcome.memory_exceeded:  # its processes together, killed by the worker's watch
        return Reason.MEMORY_LIMIT
    if outcome.cpu_exceeded:
        return Reason.CPU_LIMIT
    if outcome.exit_code == 0:
        return None
    if "MemoryError" in outcome.stderr:
        return Reason.MEMORY_LIMIT
    return Reason.ERROR
