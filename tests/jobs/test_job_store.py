"""The job store on both backends: SQLite always, PostgreSQL when VEILGATE_TEST_PG_DSN is set.
Reviews and runs race through several handles (processes, or replicas) and none is lost."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from gateway.errors import Conflict, NotFound
from gateway.state.ports import Job, JobStore


def submit(store: JobStore, submitter: str = "demo-researcher") -> Job:
    return store.submit(
        submitter=submitter, organisation="o", service="s", purpose="p", grant_id="g", code="print(1)",
        code_kind="file", code_sha256="h", datasets=["d"], outputs=["out"], epsilon="0.5",
    )  # fmt: skip


def test_a_job_goes_from_submitted_to_finished(open_store: Callable[[], JobStore]) -> None:
    store = open_store()
    job = submit(store)
    assert store.get(job.id) == job and job.status == "submitted" and job.datasets == ["d"]
    with pytest.raises(Conflict, match="own job"):
        store.review(job.id, "demo-researcher", "approve", "mine", 1)
    assert store.review(job.id, "admin-a", "approve", "fine", 2).status == "submitted"
    with pytest.raises(Conflict, match="reviewed this job already"):
        store.review(job.id, "admin-a", "approve", "again", 2)
    approved = store.review(job.id, "admin-b", "approve", "fine", 2)
    assert approved.status == "approved" and [r["reviewer"] for r in approved.reviews] == ["admin-a", "admin-b"]
    claimed = store.claim_run(job.id)
    assert claimed.status == "running"
    done = store.finish(claimed, status="finished", result={"outputs": {"out": 1}}, stdout="ok", stderr="", reason=None)
    assert done.result == {"outputs": {"out": 1}} and done.stdout == "ok"
    assert store.code_of(job.id) == ("print(1)", "file", "h")
    assert [j.id for j in store.recent(submitter="demo-researcher")] == [job.id]
    assert store.recent(submitter="nobody") == []
    with pytest.raises(NotFound):
        store.get("job-unknown")


def test_concurrent_reviews_through_several_handles_lose_none(open_store: Callable[[], JobStore]) -> None:
    """Eight administrators approve at once through two handles; three approvals are needed. Each
    review reads the job and writes it back: without holding the job, one would overwrite another."""
    handles = [open_store(), open_store()]
    job = submit(handles[0])
    outcomes: list[str] = []
    start = threading.Barrier(8)

    def approve(n: int) -> None:
        start.wait()
        try:
            handles[n % 2].review(job.id, f"admin-{n}", "approve", "fine", 3)
            outcomes.append("taken")
        except Conflict:
            outcomes.append("refused")

    threads = [threading.Thread(target=approve, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    final = handles[1].get(job.id)
    assert final.status == "approved"
    assert outcomes.count("taken") == len(final.reviews) == 3


def test_only_one_handle_runs_a_job(open_store: Callable[[], JobStore]) -> None:
    handles = [open_store(), open_store()]
    job = submit(handles[0])
    handles[0].review(job.id, "admin-a", "approve", "fine", 1)
    claimed: list[bool] = []
    start = threading.Barrier(6)

    def claim(n: int) -> None:
        start.wait()
        try:
            handles[n % 2].claim_run(job.id)
            claimed.append(True)
        except Conflict:
            claimed.append(False)

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert claimed.count(True) == 1


def test_only_a_failed_job_that_released_nothing_is_requeued(open_store: Callable[[], JobStore]) -> None:
    store, other = open_store(), open_store()
    stopped, ran = submit(store), submit(store)
    for job in (stopped, ran):
        store.review(job.id, "admin-a", "approve", "fine", 1)
    store.claim_run(stopped.id)
    claimed = store.claim_run(ran.id)
    assert store.fail_if_running(stopped.id, "its process stopped")
    store.finish(claimed, status="failed", result={"outputs": {}}, stdout="", stderr="boom", reason="exit 1")
    requeued = other.requeue(stopped.id, "admin-b", "restarted", needed=1)
    assert requeued.status == "approved" and requeued.reason is None
    assert requeued.reviews[-1]["decision"] == "requeue" and requeued.reviews[-1]["reviewer"] == "admin-b"
    assert [j.id for j in store.waiting(approved_before=datetime.now(UTC))] == [stopped.id]
    with pytest.raises(Conflict, match="released nothing"):
        other.requeue(ran.id, "admin-b", "again")  # it ran: its outcome stands
    with pytest.raises(Conflict):
        other.requeue(stopped.id, "admin-b", "twice")  # approved now, not failed


def test_one_administrator_cannot_requeue_alone(open_store: Callable[[], JobStore]) -> None:
    """A requeue runs the code on the data again: administrators of two identities must ask, on
    both backends; a second account of the first one, or of the submitter, does not count."""
    store, other = open_store(), open_store()
    people = {"admin-a": "person:a", "admin-a2": "person:a", "admin-b": "person:b", "demo-researcher": "person:r",
              "researcher-admin": "person:r"}  # fmt: skip
    job = submit(store)
    store.review(job.id, "admin-a", "approve", "fine", 1)
    store.claim_run(job.id)
    assert store.fail_if_running(job.id, "its process stopped")
    asked = store.requeue(job.id, "admin-a", "restarted", needed=2, identity_of=people.__getitem__)
    assert asked.status == "failed" and asked.reviews[-1]["decision"] == "requeue-request"
    assert store.waiting(approved_before=datetime.now(UTC)) == []  # nothing runs on one request
    with pytest.raises(Conflict, match="another administrator"):
        other.requeue(job.id, "admin-a2", "me again", needed=2, identity_of=people.__getitem__)
    with pytest.raises(Conflict, match="own job"):
        other.requeue(job.id, "researcher-admin", "mine", needed=2, identity_of=people.__getitem__)
    assert other.get(job.id).status == "failed"
    requeued = other.requeue(job.id, "admin-b", "agreed", needed=2, identity_of=people.__getitem__)
    assert requeued.status == "approved" and requeued.reviews[-1]["decision"] == "requeue"
    # the next failure needs two new requests: those before the requeue are spent
    run = other.claim_run(job.id)
    other.finish(run, status="failed", result=None, stdout="", stderr="", reason="failed: process stopped")
    again = store.requeue(job.id, "admin-b", "again", needed=2, identity_of=people.__getitem__)
    assert again.status == "failed" and again.reviews[-1]["decision"] == "requeue-request"


def test_a_run_that_lost_its_job_cannot_overwrite_it(open_store: Callable[[], JobStore]) -> None:
    """The old run of a job failed as overdue and requeued finishes late: its outcome is refused,
    on both backends, and the new run's stands."""
    store, other = open_store(), open_store()
    job = submit(store)
    store.review(job.id, "admin-a", "approve", "fine", 1)
    old = store.claim_run(job.id)
    assert other.fail_if_running(job.id, "failed: process stopped")
    other.requeue(job.id, "admin-b", "restarted", needed=1)
    new = other.claim_run(job.id)
    assert (old.attempt, new.attempt) == (1, 2) and store.is_current(new) and not store.is_current(old)
    with pytest.raises(Conflict, match="no longer held"):
        store.finish(old, status="finished", result={"outputs": {"old": 1}}, stdout="", stderr="", reason=None)
    assert store.get(job.id).status == "running" and store.get(job.id).result is None
    done = other.finish(new, status="finished", result={"outputs": {"new": 1}}, stdout="", stderr="", reason=None)
    assert done.result == {"outputs": {"new": 1}}
    with pytest.raises(Conflict):  # and nothing finishes it twice
        store.finish(new, status="failed", result=None, stdout="", stderr="", reason="failed: internal error")
    assert store.get(job.id).status == "finished"


def test_a_plan_run_stores_its_plan_once(open_store: Callable[[], JobStore]) -> None:
    store = open_store()
    job = store.submit(
        submitter="demo-researcher", organisation="o", service="s", purpose="p", grant_id="g", code="print(1)",
        code_kind="file", code_sha256="h", datasets=["d"], outputs=["out"], epsilon="0.5", status="planning",
    )  # fmt: skip
    with pytest.raises(Conflict):
        store.review(job.id, "admin-a", "approve", "no plan yet", 1)
    with pytest.raises(Conflict):
        store.claim_run(job.id)
    claimed = store.claim_plan(job.id)
    with pytest.raises(Conflict):
        store.claim_plan(job.id)
    plan = [{"name": "out", "status": "planned"}]
    planned = store.finish(claimed, status="submitted", result=None, stdout="", stderr="", reason=None,
                           plan=plan, plan_sha256="p1")  # fmt: skip
    assert planned.plan == plan and planned.plan_sha256 == "p1" and planned.status == "submitted"
    reviewed = store.review(job.id, "admin-a", "approve", "fine", 1)
    assert reviewed.reviews[-1]["plan_sha256"] == "p1" and reviewed.reviews[-1]["code_sha256"] == "h"


def test_a_plan_run_whose_process_stopped_waits_to_run_again(open_store: Callable[[], JobStore]) -> None:
    store = open_store()
    job = store.submit(
        submitter="demo-researcher", organisation="o", service="s", purpose="p", grant_id="g", code="print(1)",
        code_kind="file", code_sha256="h", datasets=["d"], outputs=["out"], epsilon="0.5", status="planning",
    )  # fmt: skip
    lost = store.claim_plan(job.id)
    assert [j.id for j in store.running()] == [job.id]
    assert store.fail_if_running(job.id, "failed: process stopped")
    assert store.get(job.id).status == "planning" and store.get(job.id).reason is None
    with pytest.raises(Conflict):
        store.finish(lost, status="submitted", result=None, stdout="", stderr="", reason=None, plan=[], plan_sha256="x")
    assert store.claim_plan(job.id).attempt == 2


def test_two_accounts_of_one_person_are_one_reviewer(open_store: Callable[[], JobStore]) -> None:
    """With the accounts' identities: a submitter's second account reviews nothing, and a
    reviewer's second account does not make a second review."""
    store = open_store()
    person = {
        "demo-researcher": "person:r",
        "researcher-alt": "person:r",
        "admin-a": "person:a",
        "admin-a2": "person:a",
    }
    job = submit(store)
    with pytest.raises(Conflict, match="own job"):
        store.review(job.id, "researcher-alt", "approve", "mine", 2, identity_of=person.__getitem__)
    store.review(job.id, "admin-a", "approve", "fine", 2, identity_of=person.__getitem__)
    with pytest.raises(Conflict, match="reviewed this job already"):
        store.review(job.id, "admin-a2", "approve", "again", 2, identity_of=person.__getitem__)
    assert store.get(job.id).status == "submitted"
