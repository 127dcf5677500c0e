"""Which process runs a job, and when: the run an approval starts, approved jobs whose run never
started, and runs whose process stopped."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from gateway.domain.job_vocabulary import Reason
from gateway.services import policy_admin
from gateway.services.jobs.run import run
from gateway.services.runtime import Runtime


def start(rt: Runtime, job_id: str) -> None:
    threading.Thread(target=run, args=(rt, job_id), name=f"job-{job_id}", daemon=True).start()


UNCLAIMED_GRACE_SECONDS = 60
"""How long an approved job may wait for the run its approval started, before any process
that shares the job store starts one (only one of them runs it: `JobStore.claim_run`)."""


def start_unclaimed(rt: Runtime, *, grace_seconds: float = UNCLAIMED_GRACE_SECONDS) -> list[str]:
    """Start the approved jobs that no process runs: the approving process stopped before its run
    began. At startup (no grace: this process approved nothing yet) and every checkpoint
    interval. Returns their ids."""
    waiting = rt.jobs.waiting(approved_before=datetime.now(UTC) - timedelta(seconds=grace_seconds))
    for job in waiting:
        start(rt, job.id)
    return [job.id for job in waiting]


OVERDUE_GRACE_SECONDS = 600
"""Beyond its service's wall-clock limit, what a run may still take: exporting its inputs,
checking its outputs, releasing them."""


def fail_overdue(rt: Runtime, now: datetime | None = None) -> list[str]:
    """Jobs still `running` long after their sandbox's wall-clock limit: whatever process ran them
    stopped, on this host or another (replicas share the job store). Marked failed, so nobody
    waits for them forever; returns their ids."""
    now = now or datetime.now(UTC)
    bundle = policy_admin.current(rt).bundle
    failed = []
    for job in rt.jobs.running():
        service = bundle.job_services.get(job.service)
        wall = service.limits.wall_seconds if service is not None else 0
        if now - datetime.fromisoformat(job.updated) > timedelta(seconds=wall + OVERDUE_GRACE_SECONDS):
            reason = Reason.PROCESS_STOPPED.value
            if rt.jobs.fail_if_running(job.id, reason):
                failed.append(job.id)
    return failed
