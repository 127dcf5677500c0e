"""Factories for job tests: researcher and administrator clients on one installation, and a
helper that submits a job, has it approved by two administrators and waits for its outcome."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.sandbox_client import isolation_problem
from tests.conftest import Installation, bearer, get_token

needs_isolation = pytest.mark.skipif(
    isolation_problem() is not None, reason=f"the sandbox cannot build namespaces here: {isolation_problem()}"
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
            "outputs": outputs or ["counts"],
            **extra,
        }
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

    def wait(self, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = self.status(job_id)
            if body["status"] in ("finished", "failed", "rejected"):
                return body
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} did not finish: {self.status(job_id)}")

    def planned(self, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """The job once past its plan run (DP services; other jobs are past it at once)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = self.status(job_id)
            if body["status"] not in ("planning", "planning-run"):
                return body
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} was not planned: {self.status(job_id)}")

    def run(self, code: str, **submit: Any) -> dict[str, Any]:
        """Submit, approve twice, wait: the researcher's view of the outcome."""
        submitted = self.submit(code, **submit)
        assert submitted.status_code == 201, submitted.text
        job_id = submitted.json()["id"]
        self.planned(job_id)
        assert self.review(job_id, "demo-admin").status_code == 200
        assert self.review(job_id, "demo-approver").status_code == 200
        return self.wait(job_id)


@pytest.fixture
def jobs_gateway(installation: Installation, bundle_app: Callable[..., TestClient]) -> Callable[..., Jobs]:
    def factory(change: Callable[[dict[str, Any]], None] | None = None) -> Jobs:
        client = bundle_app(change)
        who = ("demo-researcher", "demo-admin", "demo-approver", "demo-business")
        headers = {w: bearer(get_token(client, w, installation.credentials[w])) for w in who}
        return Jobs(client, installation, headers)

    return factory
