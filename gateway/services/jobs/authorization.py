"""Authorization again, at release and during a run: not only at submission and start.

A freeze, a revoked or expired grant, a withdrawn service, or the submitter's account disabled
between the start of a run and its release stops the run and releases nothing (`Reason.FROZEN`,
`GRANT_REVOKED`, `SERVICE_WITHDRAWN`, `ACCOUNT_DISABLED`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Protocol

from gateway.domain.job_vocabulary import Reason
from gateway.domain.policy import Freeze, FreezeKind, PolicyBundle
from gateway.errors import Conflict
from gateway.services import policy_admin
from gateway.services.needs import HasClients, HasFreezes
from gateway.services.policy_admin import PolicyReader
from gateway.state.ports import Job


class StopNeeds(PolicyReader, HasFreezes, HasClients, Protocol):
    """Whether a job is stopped: the bundle in force, the freezes and the submitter's account."""


def stopped(rt: StopNeeds, job: Job) -> Reason | None:
    """Why `job` may not (any longer) run or release, or None: the freezes and the policy in force
    now, and the submitter's account (SECURITY: disabling it stops the person's runs too)."""
    why = why_stopped(policy_admin.current(rt).bundle, rt.freezes.active(), job, datetime.now(UTC))
    if why is None:
        account = rt.clients.find(job.submitter)
        if account is None or account.disabled:
            return Reason.ACCOUNT_DISABLED
    return why


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


def refuse_the_submitters_maker(rt: HasClients, job: Job, who: str, act: str) -> None:
    """SECURITY: an account an administrator made names its person on that administrator's word
    alone (checked by nobody else), so one administrator could invent a person, submit as them
    and count as one of the two who approve: the maker of the submitter's account takes no part
    in that account's jobs (reviews, requeues, output checks)."""
    account = rt.clients.find(job.submitter)
    maker = None if account is None else account.maker_identity
    if maker is not None and maker == rt.clients.identity_of(who):
        raise Conflict(f"nobody {act} the jobs of an account they made: another administrator must")
