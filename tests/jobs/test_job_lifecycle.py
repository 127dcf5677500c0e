"""A job's life: review by two administrators, an isolated run, checked outputs, a signed and
charged release; changed code does not run, and nobody reviews their own job."""

from __future__ import annotations

import hashlib
import json
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.errors import Conflict
from gateway.services import job_worker
from gateway.services import jobs as job_services
from gateway.services.receipts import verify_receipt
from gateway.state.jobs_sqlite import SqliteJobStore
from tests.conftest import REPO
from tests.jobs.conftest import EXAMPLE_TABLES, Jobs, needs_isolation

EXAMPLES = REPO / "sandbox" / "examples"

pytestmark = needs_isolation


def test_the_example_table_job_runs_end_to_end(jobs_gateway: Callable[..., Jobs]) -> None:
    jobs = jobs_gateway()
    code = (EXAMPLES / "enterprises_by_status.py").read_text()
    outcome = jobs.run(code, tables=EXAMPLE_TABLES)
    assert outcome["status"] == "finished", outcome
    document = outcome["result"]
    result = document["result"]
    assert result["isolation"] == "bubblewrap" and result["completed"] is True
    table = result["outputs"]["enterprises_by_status"]
    assert table["status"] == "released" and table["keys"] == ["industry", "status"]
    counts = [row["enterprises"] for row in table["rows"]]
    assert all(c is None or c % 5 == 0 for c in counts) and any(c is None for c in counts)
    assert any(c is not None and c > 7 for c in counts)
    jwks = jobs.client.get("/.well-known/jwks.json").json()
    assert verify_receipt(document["receipt"], jwks).result == result
    assert "stdout" not in outcome and "code" not in outcome  # the researcher sees results only


def test_the_example_dp_job_is_released_and_charged_exactly(jobs_gateway: Callable[..., Jobs]) -> None:
    jobs = jobs_gateway()
    code = (EXAMPLES / "wage_by_industry.py").read_text()
    outcome = jobs.run(
        code,
        service="labour-analysis",
        datasets=["social_insurance"],
        outputs=["mean_wage_by_industry", "records_by_industry_paid"],
        epsilon="1",
    )
    assert outcome["status"] == "finished", outcome
    result = outcome["result"]["result"]
    for name in ("mean_wage_by_industry", "records_by_industry_paid"):
        output = result["outputs"][name]
        assert output["status"] == "released" and output["kind"] == "dp", output
        assert len(output["rows"]) == 20 and output["epsilon"] == "0.5"
    assert outcome["result"]["privacy_spent"]["epsilon"] == "1"
    budgets = jobs.client.get("/v1/budget", headers=jobs.headers["demo-researcher"]).json()["budgets"]
    (social,) = [b for b in budgets if b["dataset"] == "social_insurance"]
    assert social["levels"]["grant"]["spent"]["epsilon"] == "1"
    # the job's stdout (it printed the years it found) is for administrators only
    assert "rows over the years" in jobs.admin_view(outcome["id"])["stdout"]
    assert "rows over the years" not in str(outcome)


def test_changed_code_after_approval_does_not_run(jobs_gateway: Callable[..., Jobs]) -> None:
    jobs = jobs_gateway()
    submitted = jobs.submit("import veilgate_job as vg\nvg.table('counts', [], keys=[], counts=['n'])\n")
    job_id = submitted.json()["id"]
    assert jobs.review(job_id, "demo-admin").status_code == 200
    store = jobs.installation.settings.state_dir / "jobs" / "jobs.sqlite3"
    with sqlite3.connect(store) as conn:  # someone with access to the store swaps the code
        conn.execute("UPDATE jobs SET code = ? WHERE id = ?", ("import os\nprint(os.listdir('/'))\n", job_id))
    assert jobs.review(job_id, "demo-approver").status_code == 200
    outcome = jobs.wait(job_id)
    assert outcome["status"] == "failed" and outcome["reason"] == "failed: code not approved"
    assert outcome["result"] is None


def test_reviews_are_independent(jobs_gateway: Callable[..., Jobs], tmp_path: Path) -> None:
    jobs = jobs_gateway()
    job_id = jobs.submit("print('hello')\n").json()["id"]
    assert jobs.review(job_id, "demo-admin").status_code == 200
    again = jobs.review(job_id, "demo-admin")
    assert again.status_code == 409 and "another administrator" in again.json()["detail"]
    assert jobs.review(job_id, "demo-researcher").status_code == 403  # not an administrator
    listed = jobs.client.get("/v1/admin/jobs", headers=jobs.headers["demo-admin"]).json()["jobs"]
    assert [j["id"] for j in listed] == [job_id]
    assert jobs.client.get("/v1/admin/jobs", headers=jobs.headers["demo-researcher"]).status_code == 403
    assert jobs.status(job_id)["status"] == "submitted"
    rejected = jobs.review(job_id, "demo-approver", "reject", "reads more than it needs")
    assert rejected.status_code == 200
    assert jobs.status(job_id)["status"] == "rejected" and jobs.status(job_id)["reason"] == "reads more than it needs"
    # nobody reviews their own job: the store refuses it whoever asks
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    own = store.submit(
        submitter="demo-admin", organisation="o", service="s", purpose="p", grant_id="g", code="x", code_kind="file",
        code_sha256="h", datasets=["d"], outputs=["o"], epsilon=None,
    )  # fmt: skip
    with pytest.raises(Conflict, match="own job"):
        store.review(own.id, "demo-admin", "approve", "mine", 1)
    store.close()


def test_submissions_are_checked_before_review(jobs_gateway: Callable[..., Jobs]) -> None:
    jobs = jobs_gateway()
    assert jobs.submit("x", datasets=["social_insurance"]).status_code == 422  # not a dataset of the service
    assert jobs.submit("x", service="no-such-service").status_code == 404
    assert jobs.submit("x", service="labour-analysis", datasets=["social_insurance"], epsilon="9").status_code == 422
    assert jobs.submit("x", epsilon="1").status_code == 422  # an SDC service takes no epsilon
    business = jobs.client.post(
        "/v1/jobs",
        json={"service": "enterprise-tables", "purpose": "public_research", "code": "x",
              "datasets": ["enterprise_registry"], "outputs": ["o"]},
        headers=jobs.headers["demo-business"],
    )  # fmt: skip
    assert business.status_code == 403
    job_id = jobs.submit("print(1)\n").json()["id"]
    other = jobs.client.get(f"/v1/jobs/{job_id}", headers=jobs.headers["demo-business"])
    assert other.status_code == 404  # another's job does not exist for you


def test_run_local_gives_the_same_shape_on_the_synthetic_sample(
    jobs_gateway: Callable[..., Jobs], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from gateway.cli import app

    jobs = jobs_gateway()
    example = EXAMPLES / "enterprises_by_status.py"
    in_domain = jobs.run(example.read_text(), tables=EXAMPLE_TABLES)["result"]["result"]["outputs"]
    config = jobs.installation.root / "veilgate.toml"
    result = CliRunner().invoke(
        app,
        ["jobs", "run-local", str(example), "--service", "enterprise-tables", "--dataset", "enterprise_registry",
         "--tables", str(example.with_suffix(".tables.json")), "--config", str(config)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    local = json.loads(result.stdout[result.stdout.index("{") :])["outputs"]
    assert local.keys() == in_domain.keys()
    for name, output in local.items():
        assert in_domain[name]["status"] == "released"
        assert output["keys"] == in_domain[name]["keys"] and output["counts"] == in_domain[name]["counts"]
    # a table the gateway computes is planned locally; one the job writes would wait for checkers
    assert local["enterprises_by_status"]["status"] == "checked"
    written = local["active_by_province"]
    assert written["status"] == "held" and set(written["rows"][0]) == set(in_domain["active_by_province"]["rows"][0])


def test_a_small_archive_runs_its_main_and_its_modules(jobs_gateway: Callable[..., Jobs]) -> None:
    import base64
    import io
    import zipfile

    jobs = jobs_gateway()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("main.py", "import tally\ntally.publish()\n")
        archive.writestr(
            "tally.py",
            "from collections import Counter\nimport veilgate_job as vg\n\n"
            "def publish():\n"
            "    t = vg.dataset('enterprise_registry')\n"
            "    c = Counter(t.column('status').to_pylist())\n"
            "    rows = [{'status': s, 'n': n} for s, n in sorted(c.items())]\n"
            "    vg.table('counts', rows, keys=['status'], counts=['n'])\n",
        )
    body = base64.b64encode(buffer.getvalue()).decode()
    response = jobs.client.post(
        "/v1/jobs",
        json={"service": "enterprise-tables", "purpose": "public_research", "archive": body,
              "datasets": ["enterprise_registry"], "tables": [{"name": "counts", "keys": ["status"], "counts": ["n"]}]},
        headers=jobs.headers["demo-researcher"],
    )  # fmt: skip
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    assert response.json()["code_sha256"] == hashlib.sha256(buffer.getvalue()).hexdigest()
    assert jobs.review(job_id, "demo-admin").status_code == jobs.review(job_id, "demo-approver").status_code == 200
    assert jobs.wait(job_id)["status"] == "awaiting output check", jobs.admin_view(job_id)["stderr"]
    outcome = jobs.check_all(job_id)
    assert outcome["status"] == "finished", outcome
    assert outcome["result"]["result"]["outputs"]["counts"]["status"] == "released"


@pytest.mark.parametrize(
    "entries",
    [{"../escape.py": "x", "main.py": "x"}, {"/abs.py": "x", "main.py": "x"}, {"other.py": "x"}],
)
def test_a_hostile_archive_is_refused_at_submission(jobs_gateway: Callable[..., Jobs], entries: dict[str, str]) -> None:
    import base64
    import io
    import zipfile

    jobs = jobs_gateway()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in entries.items():
            archive.writestr(name, text)
    response = jobs.client.post(
        "/v1/jobs",
        json={"service": "enterprise-tables", "purpose": "public_research",
              "archive": base64.b64encode(buffer.getvalue()).decode(),
              "datasets": ["enterprise_registry"], "outputs": ["counts"]},
        headers=jobs.headers["demo-researcher"],
    )  # fmt: skip
    assert response.status_code == 422 and "archive" in response.json()["detail"]


def test_a_freeze_after_approval_stops_the_run(jobs_gateway: Callable[..., Jobs]) -> None:
    jobs = jobs_gateway()
    job_id = jobs.submit("print('hello')\n").json()["id"]
    assert jobs.review(job_id, "demo-admin").status_code == 200
    stop = {"kind": "consumer", "name": "demo-researcher", "reason": "investigation"}
    assert jobs.client.post("/v1/admin/freeze", json=stop, headers=jobs.headers["demo-admin"]).status_code == 201
    assert jobs.review(job_id, "demo-approver").status_code == 200
    outcome = jobs.wait(job_id)
    assert outcome["status"] == "failed" and outcome["reason"] == "stopped: frozen" and outcome["result"] is None


def test_a_job_left_running_by_a_stopped_process_is_marked_failed(jobs_gateway: Callable[..., Jobs]) -> None:
    jobs = jobs_gateway()
    job_id = jobs.submit("print('hello')\n").json()["id"]
    store = jobs.installation.settings.state_dir / "jobs" / "jobs.sqlite3"
    with sqlite3.connect(store) as conn:
        conn.execute(
            "UPDATE jobs SET status = 'running', runner = ? WHERE id = ?",
            (f"{socket.gethostname()}:{_finished_pid()}", job_id),
        )
    restarted = jobs_gateway()
    with restarted.client:
        assert restarted.status(job_id)["status"] == "running"  # the API process runs no job, fails none
        job_worker.recover(restarted.client.app.state.runtime)  # a worker that starts looks for orphans
        outcome = restarted.status(job_id)
    assert outcome["status"] == "failed" and outcome["reason"] == "failed: process stopped"


def _finished_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_job_left_running_by_another_host_is_failed_once_overdue(jobs_gateway: Callable[..., Jobs]) -> None:
    """Replicas share the job store: a job whose runner on another machine stopped is found by
    its age, once it is far past the wall-clock limit of its service, and not before."""
    jobs = jobs_gateway()
    overdue, recent = (jobs.submit(f"print({n})\n").json()["id"] for n in (1, 2))
    store = jobs.installation.settings.state_dir / "jobs" / "jobs.sqlite3"
    long_ago = (datetime.now(UTC) - timedelta(hours=3)).isoformat(timespec="seconds")
    with sqlite3.connect(store) as conn:
        conn.execute("UPDATE jobs SET status = 'running', runner = 'another-host:4242', updated = ? WHERE id = ?",
                     (long_ago, overdue))  # fmt: skip
        conn.execute("UPDATE jobs SET status = 'running', runner = 'another-host:4242' WHERE id = ?", (recent,))
    restarted = jobs_gateway()
    with restarted.client:
        restarted.work()  # each poll of a worker looks for overdue jobs
        failed, running = restarted.status(overdue), restarted.status(recent)
    assert failed["status"] == "failed" and failed["reason"] == "failed: process stopped"
    assert running["status"] == "running"  # it may still be running over there


def test_an_approved_job_waits_for_a_worker_and_runs_once(jobs_gateway: Callable[..., Jobs]) -> None:
    """The API process records the approval and runs nothing; the next poll of a worker runs the
    job, and a second poll (or a second worker) does not run it again."""
    jobs = jobs_gateway()
    code = (EXAMPLES / "enterprises_by_status.py").read_text()
    job_id = jobs.submit(code, tables=EXAMPLE_TABLES).json()["id"]
    assert jobs.review(job_id, "demo-admin").status_code == 200
    assert jobs.review(job_id, "demo-approver").status_code == 200
    time.sleep(1)
    assert jobs.status(job_id)["status"] == "approved"  # nothing ran it in the API process
    rt = jobs.client.app.state.runtime
    assert job_services.runnable(rt) == [job_id]
    assert jobs.work() == [job_id]
    assert job_services.runnable(rt) == [] and jobs.work() == []
    assert jobs.status(job_id)["status"] == "awaiting output check"
    assert job_services.run(rt, job_id).status == "awaiting output check"  # a late second claim runs nothing
    outcome = jobs.check_all(job_id)
    assert outcome["status"] == "finished", outcome
    assert outcome["result"]["result"]["outputs"]["enterprises_by_status"]["status"] == "released"


def test_an_administrator_runs_again_a_job_whose_process_stopped(jobs_gateway: Callable[..., Jobs]) -> None:
    """A job failed by a stopped process released nothing: it runs again under its approvals. A
    job that ran is not run again, and only administrators of two identities requeue."""
    jobs = jobs_gateway()
    code = (EXAMPLES / "enterprises_by_status.py").read_text()
    job_id = jobs.submit(code, tables=EXAMPLE_TABLES).json()["id"]
    assert jobs.review(job_id, "demo-admin").status_code == 200
    assert jobs.review(job_id, "demo-approver").status_code == 200
    store = jobs.installation.settings.state_dir / "jobs" / "jobs.sqlite3"
    with sqlite3.connect(store) as conn:  # it was running in a process that is gone
        conn.execute("UPDATE jobs SET status = 'running', runner = ? WHERE id = ?",
                     (f"{socket.gethostname()}:{_finished_pid()}", job_id))  # fmt: skip
    restarted = jobs_gateway()
    with restarted.client:
        job_worker.recover(restarted.client.app.state.runtime)
        assert restarted.status(job_id)["status"] == "failed"
        path = f"/v1/admin/jobs/{job_id}/requeue"
        body = {"reason": "the gateway restarted during the run"}
        assert restarted.client.post(path, json=body, headers=restarted.headers["demo-researcher"]).status_code == 403
        asked = restarted.client.post(path, json=body, headers=restarted.headers["demo-admin"])
        assert asked.status_code == 200 and asked.json()["status"] == "failed"  # one administrator: a request only
        again = restarted.client.post(path, json=body, headers=restarted.headers["demo-admin"])
        assert again.status_code == 409 and "another administrator" in again.text
        assert restarted.client.post(path, json=body, headers=restarted.headers["demo-approver"]).status_code == 200
        assert restarted.wait(job_id)["status"] == "awaiting output check"
        outcome = restarted.check_all(job_id)
        assert outcome["status"] == "finished", outcome
        assert outcome["result"]["result"]["outputs"]["enterprises_by_status"]["status"] == "released"
        again = restarted.client.post(path, json=body, headers=restarted.headers["demo-admin"])
        assert again.status_code == 409 and "released nothing" in again.text
        reviews = restarted.admin_view(job_id)["reviews"]
        assert [(r["reviewer"], r["decision"]) for r in reviews if "output" not in r][-2:] == [
            ("demo-admin", "requeue-request"),
            ("demo-approver", "requeue"),
        ]
