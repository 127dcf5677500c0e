"""When a run ends is the job's choice, not the researcher's signal: an SDC job's outcome is
recorded, and its status changes, only once its service's wall-clock limit has passed from
when its inputs were ready, whether the job ended at once or slept for a time computed from the
data."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.jobs.conftest import QUICK_LIMITS, Jobs, needs_isolation

pytestmark = needs_isolation

WALL = QUICK_LIMITS["wall_seconds"]
QUICK = "pass\n"
# A job that chooses its end from the data: it sleeps longer when the register holds more rows.
CHOOSING = (
    "import time\nimport pyarrow.parquet as pq\n"
    "rows = pq.read_metadata('/mnt/inputs/data/enterprise_registry.parquet').num_rows\n"
    "time.sleep(3 if rows > 10 else 0)\n"
)


def _approved(jobs: Jobs, code: str) -> str:
    submitted = jobs.submit(code)
    assert submitted.status_code == 201, submitted.text
    job_id: str = submitted.json()["id"]
    jobs.planned(job_id)
    for who in ("demo-admin", "demo-approver"):
        assert jobs.review(job_id, who).status_code == 200
    return job_id


def _run_seen_by_the_researcher(jobs: Jobs, code: str) -> tuple[float, dict[str, object]]:
    """Seconds from the worker's start until the researcher first sees the job other than
    approved or running, and the outcome then seen."""
    job_id = _approved(jobs, code)
    started = time.monotonic()
    worker = jobs.work_in_background()
    while True:
        seen = jobs.status(job_id)
        if seen["status"] not in ("approved", "running"):
            ended = time.monotonic() - started
            break
        assert worker.is_alive() or jobs.status(job_id)["status"] not in ("approved", "running")
        time.sleep(0.1)
    worker.join()
    return ended, seen


def test_a_run_that_ends_early_or_late_within_its_limit_is_seen_to_end_at_its_limit(
    jobs_gateway: Callable[..., Jobs],
) -> None:
    jobs = jobs_gateway()
    quick, quick_outcome = _run_seen_by_the_researcher(jobs, QUICK)
    chosen, chosen_outcome = _run_seen_by_the_researcher(jobs, CHOOSING)
    # Neither outcome shows before the limit, and the 3 s the second job chose does not show.
    assert quick >= WALL and chosen >= WALL, (quick, chosen)
    assert abs(chosen - quick) < 1.5, (quick, chosen)
    assert quick_outcome["status"] == chosen_outcome["status"]


def test_a_freeze_during_the_wait_stops_the_run_at_once(jobs_gateway: Callable[..., Jobs]) -> None:
    """The wait is the job's, not the administrator's: a stop during it is recorded within a
    poll, as a stop (nothing released), long before the limit."""

    def long_limit(bundle: dict[str, Any]) -> None:
        bundle["job_services"]["enterprise-tables"]["limits"] = {**QUICK_LIMITS, "wall_seconds": 60}

    jobs = jobs_gateway(long_limit)
    job_id = _approved(jobs, QUICK)
    worker = jobs.work_in_background()
    deadline = time.monotonic() + 30
    while jobs.status(job_id)["status"] != "running":
        assert time.monotonic() < deadline, jobs.status(job_id)
        time.sleep(0.1)
    time.sleep(3)  # the job ended long ago; its outcome waits
    assert jobs.status(job_id)["status"] == "running"
    stop = {"kind": "consumer", "name": "demo-researcher", "reason": "investigation"}
    frozen_at = time.monotonic()
    assert jobs.client.post("/v1/admin/freeze", json=stop, headers=jobs.headers["demo-admin"]).status_code == 201
    worker.join(timeout=20)
    assert not worker.is_alive() and time.monotonic() - frozen_at < 20
    outcome = jobs.status(job_id)
    assert outcome["status"] == "failed" and outcome["reason"] == "stopped: frozen" and outcome["result"] is None
