"""`veilgate worker` as a process: a worker killed mid-run takes its job's processes with it,
the next one cleans up what it left (processes of the job uids, run directories with their
exported inputs) and fails the job; one worker per host; a freeze during a run kills the run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway import job_processes
from tests.conftest import JOB_UIDS
from tests.jobs.conftest import Jobs, needs_isolation

pytestmark = needs_isolation
UIDS = range(JOB_UIDS[0], JOB_UIDS[1] + 1)
SLOW = "import time, veilgate_job as vg\ntime.sleep(300)\n"


def _until(condition: Callable[[], object], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@contextmanager
def _worker(config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    veilgate = Path(sys.executable).parent / "veilgate"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [str(veilgate), "worker", "--config", str(config), "--poll", "0.2"], stdout=out, stderr=out
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def test_a_worker_killed_mid_run_takes_its_job_along_and_the_next_cleans_up(
    jobs_gateway: Callable[..., Jobs], tmp_path: Path
) -> None:
    """The old sandbox ran jobs in threads of the API process, under `unshare --kill-child`,
    which kills the job when `unshare` dies, not when the gateway does: a gateway killed
    mid-run left its job running past its wall clock, and its exported inputs on disk."""
    jobs = jobs_gateway()
    config = jobs.installation.root / "veilgate.toml"
    runs = jobs.installation.settings.state_dir / "jobs" / "runs"
    log = tmp_path / "worker.log"
    job_id = jobs.submit(SLOW).json()["id"]
    assert jobs.review(job_id, "demo-admin").status_code == jobs.review(job_id, "demo-approver").status_code == 200
    with _worker(config, log) as first:
        _until(lambda: jobs.status(job_id)["status"] == "running", 60, log.read_text())
        _until(lambda: job_processes.of_uids(UIDS), 30, "the job's processes never appeared")
        with _worker(config, log) as second:  # one worker per host
            assert second.wait(timeout=60) == 1
        assert "another worker" in log.read_text()
        first.send_signal(signal.SIGKILL)
        first.wait()
        _until(lambda: not job_processes.of_uids(UIDS), 10, "the job outlived its worker")
    assert [p.name for p in runs.iterdir()] != []  # a killed worker removes nothing itself
    assert list(runs.rglob("*.parquet"))  # the exported inputs are still on disk
    assert jobs.status(job_id)["status"] == "running"
    stray = subprocess.Popen(
        ["setpriv", f"--reuid={UIDS[7]}", f"--regid={UIDS[7]}", "--clear-groups", "sleep", "300"],
        start_new_session=True,
    )
    try:
        with _worker(config, log) as next_worker:
            _until(lambda: jobs.status(job_id)["status"] == "failed", 60, log.read_text())
            assert jobs.status(job_id)["reason"] == "failed: process stopped"
            _until(lambda: stray.poll() is not None, 10, "the stray job process was not killed")
            assert list(runs.iterdir()) == []  # run directories and exported inputs removed
            next_worker.send_signal(signal.SIGTERM)
            assert next_worker.wait(timeout=30) == 0
    finally:
        if stray.poll() is None:
            os.kill(stray.pid, signal.SIGKILL)
        stray.wait()


def test_a_freeze_during_a_run_kills_the_run(jobs_gateway: Callable[..., Jobs]) -> None:
    """The old client waited for the job to end: a job frozen during its run went on to its wall
    clock (120 s here). The worker's `should_stop` sees the freeze within a second and kills all
    of the job's processes; nothing is released."""
    jobs = jobs_gateway()
    job_id = jobs.submit(SLOW).json()["id"]
    assert jobs.review(job_id, "demo-admin").status_code == jobs.review(job_id, "demo-approver").status_code == 200
    jobs.work_in_background()
    _until(lambda: jobs.status(job_id)["status"] == "running", 60, "the job never ran")
    _until(lambda: job_processes.of_uids(UIDS), 30, "the job's processes never appeared")
    stop = {"kind": "dataset", "name": "enterprise_registry", "reason": "investigation"}
    assert jobs.client.post("/v1/admin/freeze", json=stop, headers=jobs.headers["demo-admin"]).status_code == 201
    _until(lambda: not job_processes.of_uids(UIDS), 20, "the frozen job is still running")
    outcome = jobs.wait(job_id, timeout=30)
    assert outcome["status"] == "failed" and outcome["reason"] == "stopped: frozen" and outcome["result"] is None
