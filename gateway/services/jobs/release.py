"""Step 5 of a job: one signed, audited document of its outcome."""

from __future__ import annotations

from typing import Protocol

from gateway.domain.budget import Amount, micro_epsilon
from gateway.domain.trail import AuditEvent, Cost, Decision, Json, PrivacySpent, utc_now
from gateway.services.release import ReleaseNeeds, prepare_release, release
from gateway.state.ports import Job


class JobReleaseNeeds(ReleaseNeeds, Protocol):
    """A job's signed outcome: the release step's leaves."""


def release_document(
    rt: JobReleaseNeeds, job: Job, results: dict[str, Json], *, isolation: str, reason: str | None,
    policy_version: str,
) -> Json:  # fmt: skip
    """Step 5: the signed document of the job's outcome, appended to the audit log."""
    spent = Amount(
        sum(
            micro_epsilon(str(r["epsilon"]))
            for r in results.values()
            if r.get("kind") == "dp" and r.get("status") == "released" and not r.get("replayed")
        ),
        0,
    ).epsilon
    event = AuditEvent(
        time=utc_now(),
        request_id=f"{job.id}-run-{job.attempt}",
        principal=job.submitter,
        organisation=job.organisation,
        method="RUN",
        route="/v1/jobs/{job_id}",
        decision=Decision.ALLOWED,
        status=200,
    )
    pending = prepare_release(
        rt,
        event,
        service=job.service,
        request={"job": job.id, "code_sha256": job.code_sha256, "datasets": job.datasets, "outputs": job.outputs},
        result={
            "job": job.id,
            "purpose": job.purpose,
            "grant": job.grant_id,
            "code_sha256": job.code_sha256,
            "isolation": isolation,
            "completed": reason is None,
            "reason": reason,
            "outputs": results,
        },
        dataset=job.datasets[0] if len(job.datasets) == 1 else None,
        policy_version=policy_version,
        privacy_spent=PrivacySpent(epsilon=spent),
        cost=Cost(epsilon=spent),
        grant=job.grant_id,
    )
    return release(rt, pending).body()
