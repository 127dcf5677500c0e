"""`veilgate worker`: the one process that runs jobs, and the only one with the privileges that
takes (switching to a job's uid, killing its processes). The API process records submissions
and reviews and runs nothing.

The worker polls the job store (`jobs.runnable`) and runs each job through `jobs.run`, which
claims it first, so a job never runs twice. One worker per host and uid range: it holds a lock
file, because on start it kills every process of the job uids and removes every run directory
(exported inputs included) that an earlier worker left, and marks the jobs it was running failed.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import IO

from gateway import job_host, sandbox_client
from gateway.errors import ServiceUnavailable
from gateway.services import jobs
from gateway.services.jobs import RunNeeds
from gateway.settings import Settings

log = logging.getLogger("veilgate.worker")
POLL_SECONDS = 0.5


def lock(rt: RunNeeds) -> IO[str]:
    """Hold the host's lock of the job uids for as long as the returned file stays open: a worker
    that starts kills every process of those uids, so no other may be running jobs under them,
    whatever its state directory."""
    first, last = rt.settings.sandbox_job_uids
    directory = Path("/run/lock") if Path("/run/lock").is_dir() else Path(tempfile.gettempdir())
    path = directory / f"veilgate-worker-{first}-{last}.lock"
    held = path.open("a")
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        held.close()
        raise ServiceUnavailable(f"another worker runs jobs under uids {first}-{last} on this host ({path})") from None
    return held


def recover(rt: RunNeeds) -> list[str]:
    """What an earlier worker left: its job processes killed, its run directories removed, and
    the jobs it was running marked failed. Returns their ids."""
    killed = sandbox_client.clean_up(jobs.runs_dir(rt), rt.settings.sandbox_job_uids)
    if killed:
        log.warning("killed %d processes left by an earlier worker's jobs", killed)
    failed = rt.jobs.fail_orphans()
    for job_id in failed:
        log.warning("job %s was running in a worker that stopped; marked failed", job_id)
    return failed


def work_once(rt: RunNeeds) -> list[str]:
    """Run every job that needs a run now, one after the other; returns the ids it ran."""
    for job_id in jobs.fail_overdue(rt):
        log.warning("job %s is long past its time limit and still running: its worker stopped; marked failed", job_id)
    for job_id in jobs.release_unclaimed(rt):
        log.warning("job %s was checked but its result never made (its process stopped); released it", job_id)
    ran = []
    for job_id in jobs.runnable(rt):
        job = jobs.run(rt, job_id)
        log.info("job %s: %s", job_id, job.status)
        ran.append(job_id)
    return ran


def protected_paths(settings: Settings) -> dict[str, Path]:
    """What no job may read, by name: the state directory, the keys, the data directory and
    each directory in them (any may be a link to elsewhere)."""
    found = {"the state directory (state_dir)": settings.state_dir,
             "the token keys": settings.token_keys_dir, "the receipt keys": settings.receipt_keys_dir,
             "the data directory (data_dir)": settings.data_path}  # fmt: skip
    for name, root in (("state directory", settings.state_dir), ("dataset directory", settings.data_path)):
        if root.is_dir():
            found |= {f"the {name} {p.name}": p for p in sorted(root.iterdir()) if p.is_dir()}
    return found


def check_host(settings: Settings, files: job_host.HostFiles = job_host.HOST_FILES) -> str | None:
    """Before a worker touches anything: the job uids are used by nothing else on the host, and
    (where the jail can be built) nothing secret lies in a directory it binds. Raises
    ServiceUnavailable naming the setting and the rule; returns why the jail cannot be built
    here, if it cannot and the deployment allows running without it."""
    job_host.check_job_uids(settings.sandbox_job_uids, files)  # a start kills every process of them
    problem = sandbox_client.isolation_problem(settings.sandbox_job_uids)
    if problem is not None and not settings.sandbox_unsafe_run_without_isolation:
        raise ServiceUnavailable(f"jobs cannot run here: {problem}")
    if problem is None:
        job_host.check_jail_binds(sandbox_client.allowed_paths(), protected_paths(settings))
    return problem


def serve(rt: RunNeeds, *, stop: threading.Event, poll_seconds: float = POLL_SECONDS) -> None:
    """Until `stop` is set: check the host, recover, then poll and run. The caller holds `lock`."""
    check_host(rt.settings)
    recover(rt)
    log.info("worker %d ready: polling for approved jobs every %.1f s", os.getpid(), poll_seconds)
    while not stop.is_set():
        try:
            ran = work_once(rt)
        except Exception:  # a store that cannot be read now is read again at the next poll
            log.exception("looking for jobs failed")
            ran = []
        if not ran:
            stop.wait(poll_seconds)
