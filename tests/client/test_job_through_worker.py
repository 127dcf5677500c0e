"""A job from the client library, end to end, as a researcher and the administrators live it: a
real gateway over HTTP, `veilgate worker` running in its own process with the jail, two
reviewers, the run, two output checkers, and the released tables read as DataFrames."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from veilgate_client import Gateway

from gateway.sandbox_client import isolation_problem
from tests.client.conftest import Served
from tests.conftest import REPO

EXAMPLE = REPO / "sandbox" / "examples" / "enterprises_by_status.py"
TABLES = REPO / "sandbox" / "examples" / "enterprises_by_status.tables.json"
JOB_UIDS = "[201000, 201099]"
"""A range of its own: a worker holds a host-wide lock of its range, and other runs may hold the default."""

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or isolation_problem() is not None,
    reason="the worker needs root and bubblewrap to build the jail: "
    + ("not root" if os.geteuid() != 0 else str(isolation_problem())),
)


@pytest.fixture
def worker(served: Served) -> Iterator[subprocess.Popen[bytes]]:
    """`veilgate worker` on the served installation, stopped (SIGTERM) after the test."""
    log = (served.pins / "worker.log").open("wb")
    env = {**os.environ, "VEILGATE_SANDBOX_JOB_UIDS": JOB_UIDS}
    config = str(served.root / "veilgate.toml")
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "worker", "--config", config, "--poll", "0.2"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _until(researcher: Gateway, job_id: str, status: str, worker: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        current = researcher.job(job_id).status
        if current == status:
            return
        assert current not in ("failed", "rejected"), current
        assert worker.poll() is None, log.read_text(errors="replace")[-2000:]
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} is still {researcher.job(job_id).status}")


def test_a_job_goes_from_the_client_through_the_worker_to_dataframes(
    served: Served, worker: subprocess.Popen[bytes]
) -> None:
    with contextlib.ExitStack() as stack:
        researcher = stack.enter_context(served.gateway("demo-researcher", purpose="public_research"))
        admin = stack.enter_context(served.gateway("demo-admin"))
        approver = stack.enter_context(served.gateway("demo-approver"))
        _through_the_worker(researcher, admin, approver, worker, served.pins / "worker.log")


def _through_the_worker(
    researcher: Gateway, admin: Gateway, approver: Gateway, worker: subprocess.Popen[bytes], log: Path
) -> None:
    job = researcher.submit("enterprise-tables", EXAMPLE, datasets=["enterprise_registry"], tables=TABLES)
    assert job.status == "submitted" and not job.done
    # one reviewer is not enough: the job waits for the second
    review = {"reason": "reads only what it needs"}
    admin.request("POST", f"/v1/admin/jobs/{job.id}/approve", json=review)
    time.sleep(1)
    assert researcher.job(job.id).status == "submitted"
    approver.request("POST", f"/v1/admin/jobs/{job.id}/approve", json=review)
    # the worker (not the API process) runs it; its tables wait for two output checkers
    _until(researcher, job.id, "awaiting output check", worker, log)
    assert researcher.job(job.id).result is None  # nothing reaches the researcher before the checks
    waiting = admin.get_json(f"/v1/admin/output-checks/{job.id}")["waiting"]
    assert set(waiting) == {"enterprises_by_status", "active_by_province"}
    for name in waiting:
        for checker in (admin, approver):
            checker.request("POST", f"/v1/admin/output-checks/{job.id}/{name}/release", json={"reason": "safe"})
    done = researcher.wait(job, timeout=120, poll=0.3, progress=False)
    assert done.status == "finished" and done.receipt is not None  # a signed result, checked by the client
    tables = done.outputs()
    assert set(tables) == {"enterprises_by_status", "active_by_province"} and done.withheld() == {}
    by_province = tables["active_by_province"]
    assert set(by_province.columns) == {"province", "enterprises"} and len(by_province) > 0
    counts = by_province["enterprises"].dropna()  # a suppressed cell is missing, never a made-up number
    assert len(counts) > 0 and (counts > 0).all()
