"""Factories for job tests: researcher and administrator clients on one installation, and a
helper that submits a job, has it approved by two administrators and runs it the way
`veilgate worker` does (`job_worker.work_once`: the API process runs no job)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.sandbox_client import isolation_problem
from gateway.services import job_worker
from gateway.state.jobs_postgres import PostgresJobStore
from gateway.state.jobs_sqlite import SqliteJobStore
from gateway.state.ports import AWAITING_CHECK, JobStore
from tests.conftest import ON_POSTGRES, REPO, Installation, bearer, get_token, store_handles

EXAMPLE_TABLES: list[dict[str, Any]] = json.loads(
    (REPO / "sandbox" / "examples" / "enterprises_by_status.tables.json").read_text()
)
"""The tables the example SDC job declares: one computed by the gateway, one the job writes."""
CHECKERS = ("demo-admin", "demo-approver")
QUICK_LIMITS = {"cpu_seconds": 5, "wall_seconds": 5, "memory_mb": 1024, "file_mb": 8, "processes": 16, "scratch_mb": 16}
"""The SDC service's limits in job tests: the run's outcome is recorded once its wall-clock limit
has passed, so every SDC run takes about this long."""

needs_isolation = pytest.mark.skipif(
    isolation_problem() is not None, reason=f"the jail cannot be built here: {isolation_problem()}"
)


@dataclass
class Jobs:
    client: TestClient
    installation: Installation
    headers: dict[str, dict[str, str]]

    def submit(self, code: str, *, service: str = "enterprise-tables", datasets: list[str] | None = None,
               outputs: list[str] | None = None, **extra: Any) -> Any:  # fmt: skip
        body = {
            "service": service,
            "purpose": "public_research",
            "code": code,
            "datasets": datasets or ["enterprise_registry"],
            **extra,
        }
        if service == "enterprise-tables" and "tables" not in extra:  # an SDC service: tables declared
            body["tables"] = [{"name": name, "keys": [], "counts": ["n"]} for name in outputs or ["counts"]]
        if outputs is not None or service != "enterprise-tables":
            body["outputs"] = outputs or ["counts"]
        return self.client.post("/v1/jobs", json=body, headers=self.headers["demo-researcher"])

    def review(self, job_id: str, who: str, decision: str = "approve", reason: str = "reviewed") -> Any:
        return self.client.post(
            f"/v1/admin/jobs/{job_id}/{decision}", json={"reason": reason}, headers=self.headers[who]
        )

    def status(self, job_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self.client.get(f"/v1/jobs/{job_id}", headers=self.headers["demo-researcher"]).json()
        return body

    def admin_view(self, job_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self.client.get(f"/v1/admin/jobs/{job_id}", headers=self.headers["demo-admin"]).json()
        return body

    def work(self) -> list[str]:
        """What one poll of the worker does: run every job that needs a run now."""
        return job_worker.work_once(self.client.app.state.runtime)

    def work_in_background(self) -> threading.Thread:
        """One poll of the worker in another thread, for a test that acts during a run."""
        thread = threading.Thread(target=self.work, name="test-worker", daemon=True)
        thread.start()
        return thread

    def wait(self, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.work()
            body = self.status(job_id)
            if body["status"] in ("finished", "failed", "rejected", AWAITING_CHECK):
                return body
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} did not finish: {self.status(job_id)}")

    def planned(self, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """The job once past its plan run (DP services; other jobs are past it at once)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.work()
            body = self.status(job_id)
            if body["status"] not in ("planning", "planning-run"):
                return body
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} was not planned: {self.status(job_id)}")

    def check(self, job_id: str, output: str, who: str, decision: str = "release", reason: str = "checked") -> Any:
        return self.client.post(
            f"/v1/admin/output-checks/{job_id}/{output}/{decision}", json={"reason": reason}, headers=self.headers[who]
        )

    def check_all(self, job_id: str, decision: str = "release") -> dict[str, Any]:
        """Two output checkers decide every held output alike: the researcher's view after."""
        waiting = self.client.get(f"/v1/admin/output-checks/{job_id}", headers=self.headers["demo-admin"]).json()
        for name in waiting["waiting"]:
            for who in CHECKERS:
                assert self.check(job_id, name, who, decision).status_code == 200
        return self.status(job_id)

    def run(self, code: str, *, checked: bool = True, **submit: Any) -> dict[str, Any]:
        """Submit, approve twice, wait, and (`checked`) have two checkers release every held
        output: the researcher's view of the outcome."""
        submitted = self.submit(code, **submit)
        assert submitted.status_code == 201, submitted.text
        job_id = submitted.json()["id"]
        self.planned(job_id)
        assert self.review(job_id, "demo-admin").status_code == 200
        assert self.review(job_id, "demo-approver").status_code == 200
        outcome = self.wait(job_id)
        if checked and outcome["status"] == AWAITING_CHECK:
            return self.check_all(job_id)
        return outcome


@pytest.fixture
def jobs_gateway(installation: Installation, bundle_app: Callable[..., TestClient]) -> Callable[..., Jobs]:
    def factory(change: Callable[[dict[str, Any]], None] | None = None) -> Jobs:
        def changed(bundle: dict[str, Any]) -> None:
            # A run's outcome waits for its service's wall-clock limit: the shortest allowed
            # keeps the tests quick (a test that needs more sets its own limits).
            bundle["job_services"]["enterprise-tables"]["limits"] = dict(QUICK_LIMITS)
            if change is not None:
                change(bundle)

        client = bundle_app(changed)
        who = ("demo-researcher", "demo-admin", "demo-approver", "demo-business")
        headers = {w: bearer(get_token(client, w, installation.credentials[w])) for w in who}
        return Jobs(client, installation, headers)

    return factory


@pytest.fixture(params=["sqlite", ON_POSTGRES])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], JobStore]]:
    """A factory: every call opens another handle on one job store (SQLite or PostgreSQL)."""
    with store_handles(
        request.param,
        lambda: SqliteJobStore(tmp_path / "jobs.sqlite3"),
        lambda dsn, schema: PostgresJobStore(dsn, schema=schema),
    ) as factory:
        yield factory
