"""An account an administrator made names its person on that administrator's word alone: the
maker takes no part in the jobs of that account, so one administrator who invents a person
cannot submit as them and count as one of the two who approve."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from tests.conftest import bearer, get_token
from tests.jobs.conftest import Jobs


def _grant_for(client_id: str) -> Callable[[dict[str, Any]], None]:
    def change(bundle: dict[str, Any]) -> None:
        bundle["consumers"][client_id] = dict(bundle["consumers"]["demo-researcher"])
        grant = dict(bundle["grants"]["labour-research-2026"])
        bundle["grants"]["invented-research"] = {**grant, "consumer": client_id}

    return change


def _invented_researcher(jobs: Jobs) -> dict[str, str]:
    """demo-admin makes a researcher account for a person nobody else vouched for."""
    made = jobs.client.post(
        "/v1/admin/consumers",
        json={"client_id": "invented", "organisation": "Demo University", "roles": ["researcher"],
              "person": "Someone Nobody Met"},
        headers=jobs.headers["demo-admin"],
    )  # fmt: skip
    assert made.status_code == 201, made.text
    return bearer(get_token(jobs.client, "invented", made.json()["client_secret"]))


def _submitted_as(jobs: Jobs, headers: dict[str, str]) -> str:
    tables = [{"name": "counts", "keys": [], "counts": ["n"]}]
    body = {"service": "enterprise-tables", "purpose": "public_research", "code": "pass\n",
            "datasets": ["enterprise_registry"], "tables": tables}  # fmt: skip
    submitted = jobs.client.post("/v1/jobs", json=body, headers=headers)
    assert submitted.status_code == 201, submitted.text
    job_id: str = submitted.json()["id"]
    jobs.planned(job_id)
    return job_id


def _with_a_grant(
    jobs_gateway: Callable[..., Jobs], more: Callable[[dict[str, Any]], None] | None = None
) -> tuple[Jobs, dict[str, str]]:
    """The invented account, then a second administrator's grant for it (a bundle in force)."""
    invented = _invented_researcher(jobs_gateway())

    def change(bundle: dict[str, Any]) -> None:
        _grant_for("invented")(bundle)
        if more is not None:
            more(bundle)

    return jobs_gateway(change), invented


def test_the_maker_of_the_submitters_account_does_not_review_its_jobs(jobs_gateway: Callable[..., Jobs]) -> None:
    jobs, invented = _with_a_grant(jobs_gateway)
    job_id = _submitted_as(jobs, invented)
    refused = jobs.review(job_id, "demo-admin")
    assert refused.status_code == 409 and "account they made" in refused.json()["detail"]
    assert jobs.review(job_id, "demo-approver").status_code == 200
    seen = jobs.client.get(f"/v1/admin/jobs/{job_id}", headers=jobs.headers["demo-approver"]).json()
    assert seen["status"] == "submitted"  # one approval of the two needed
    assert all(r["reviewer"] != "demo-admin" for r in seen["reviews"])


def test_the_maker_neither_checks_its_outputs_nor_asks_for_a_run_again(jobs_gateway: Callable[..., Jobs]) -> None:
    """The rule holds at every step where an administrator counts as one of two: an output check
    (refused for the maker before anything else is looked at) and a request to run a failed job
    again."""
    jobs, invented = _with_a_grant(jobs_gateway)
    job_id = _submitted_as(jobs, invented)
    checked = jobs.check(job_id, "counts", "demo-admin")
    assert checked.status_code == 409 and "account they made" in checked.json()["detail"]
    other = jobs.check(job_id, "counts", "demo-approver")
    assert other.status_code == 409 and "account they made" not in other.json()["detail"]  # not held yet
    store = jobs.installation.settings.state_dir / "jobs" / "jobs.sqlite3"
    with sqlite3.connect(store) as conn:  # as a run that released nothing leaves it
        conn.execute("UPDATE jobs SET status = 'failed', result = NULL WHERE id = ?", (job_id,))
    again = {"reason": "its process stopped"}
    refused = jobs.client.post(f"/v1/admin/jobs/{job_id}/requeue", json=again, headers=jobs.headers["demo-admin"])
    assert refused.status_code == 409 and "account they made" in refused.json()["detail"]
    asked = jobs.client.post(f"/v1/admin/jobs/{job_id}/requeue", json=again, headers=jobs.headers["demo-approver"])
    assert asked.status_code in (200, 202), asked.text


def test_the_maker_reads_nothing_output_checking_holds_back(jobs_gateway: Callable[..., Jobs]) -> None:
    """A job of the invented account prints a record and holds an output for checking: its
    account's maker sees neither (the researcher's view of the job, no held values), as the
    account itself sees neither; another administrator sees both."""
    jobs, invented = _with_a_grant(jobs_gateway)
    job_id = _submitted_as(jobs, invented)
    rt = jobs.client.app.state.runtime
    for reviewer in ("demo-approver", "second-approver"):  # straight to the store: two approvals
        rt.jobs.review(job_id, reviewer, "approve", "reviewed", 2)
    leak, held_value = "raw row 110101199003070015", 4242
    held = {"outputs": {"counts": {"status": "held", "rows": [{"n": held_value}]}}, "reason": None}
    rt.jobs.hold(rt.jobs.claim_run(job_id), held=held, stdout=leak, stderr=leak, reason=None, notes=[leak])
    maker = jobs.headers["demo-admin"]
    job = jobs.client.get(f"/v1/admin/jobs/{job_id}", headers=maker)
    assert job.status_code == 200 and leak not in job.text and "stdout" not in job.json()
    listed = jobs.client.get("/v1/admin/output-checks", headers=maker)
    assert listed.status_code == 200 and job_id not in listed.text
    detail = jobs.client.get(f"/v1/admin/output-checks/{job_id}", headers=maker)
    assert detail.status_code in (403, 404, 409) and str(held_value) not in detail.text
    other = jobs.headers["demo-approver"]
    assert leak in jobs.client.get(f"/v1/admin/jobs/{job_id}", headers=other).text
    assert str(held_value) in jobs.client.get(f"/v1/admin/output-checks/{job_id}", headers=other).text
