"""Authorization again, at release and during a run: not only at submission and start.

A freeze, a revoked or expired grant, or a withdrawn service between the start of a run and its
release stops the run and releases nothing (`Reason.FROZEN`, `GRANT_REVOKED`, `SERVICE_WITHDRAWN`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Protocol

from gateway.domain.job_vocabulary import Reason
from gateway.domain.policy import Freeze, FreezeKind, PolicyBundle
from gateway.services import policy_admin
from gateway.services.needs import HasFreezes
from gateway.services.policy_admin import PolicyReader
from gateway.state.ports import Job


class StopNeeds(PolicyReader, HasFreezes, Protocol):
    """Whether a job is stopped: the bundle in force and the freezes."""


def stopped(rt: StopNeeds, job: Job) -> Reason | None:
    """Why `job` may not (any longer) run or release, or None: the freezes and the policy in force now."""
    return why_stopped(policy_admin.current(rt).bundle, rt.freezes.active(), job, datetime.now(UTC))


def why_stopped(
    bundle: PolicyBundle, freezes: Mapping[tuple[FreezeKind, str], Freeze], job: Job, now: datetime
) -> Reason | None:
    frozen = [(FreezeKind.CONSUMER, job.submitter), (FreezeKind.ORGANISATION, job.organisation),
              (FreezeKind.SERVICE, job.service), *((FreezeKind.DATASET, d) for d in job.datasets)]  # fmt: skip
    if any(key in freezes for key in frozen):
        return Reason.FROZEN
    service = bundle.job_services.get(job.service)
    if service is None or not set(job.datasets) <= set(service.datasets):
        return Reason.SERVICE_WITHDRAWN
    grant = bundle.grants.get(job.grant_id)
    if (
        grant is None
        or grant.consumer != job.submitter
        or job.service not in grant.services
        or job.purpose not in grant.purposes
        or not grant.not_before <= now < grant.expires
    ):
        return Reason.GRANT_REVOKED
    return None
