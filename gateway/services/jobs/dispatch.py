"""Which jobs a worker runs now, where their runs live, and runs whose worker stopped. The API
process starts no run: `veilgate worker` (services/job_worker.py) polls `runnable` and runs each
job with `run`, which claims it first, so a job never runs twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from gateway.domain.job_vocabulary import Reason
from gateway.services import policy_admin
from gateway.services.needs import HasJobs, HasSettings
from gateway.services.policy_admin import PolicyReader


class DispatchNeeds(PolicyReader, HasJobs, HasSettings, Protocol):
    """Which jobs wait, which are overdue, and where runs live."""


def runs_dir(rt: DispatchNeeds) -> Path:
    """Where the worker makes each run's directory (the inputs exported for it included)."""
    return rt.settings.state_dir / "jobs" / "runs"


def runnable(rt: DispatchNeeds) -> list[str]:
    """Ids of the jobs that need a run now (approved or requeued, or waiting for their plan run),
    oldest first. Several workers may see one id; only one runs it (`run` claims it first)."""
    return [job.id for job in rt.jobs.waiting(approved_before=datetime.now(UTC))]


OVERDUE_GRACE_SECONDS = 600
"""Beyond its service's wall-clock limit, what a run may still take: exporting its inputs,
checking its outputs, releasing them."""


def fail_overdue(rt: DispatchNeeds, now: datetime | None = None) -> list[str]:
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
