"""Output checking of SDC jobs: declared tables only, counts the gateway computes itself or
checks, and two output checkers (not the submitter, two different people) who release or
withhold each table before the researcher sees anything."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from gateway.catalog import CatalogStore
from gateway.domain import sdc
from gateway.domain.jobs import DisclosureControl
from gateway.domain.principal import Role
from gateway.engine import version_path
from gateway.errors import Conflict, NotFound
from gateway.services.jobs import output_checking
from gateway.state.ports import AWAITING_CHECK, JobStore
from tests.conftest import REPO
from tests.jobs.conftest import EXAMPLE_TABLES, Jobs, needs_isolation

EXAMPLE = (REPO / "sandbox" / "examples" / "enterprises_by_status.py").read_text()
LEAK = "91110000MA01ABCD2X"


def _submit_approved(jobs: Jobs, code: str, tables: list[dict[str, Any]]) -> str:
    submitted = jobs.submit(code, tables=tables)
    assert submitted.status_code == 201, submitted.text
    job_id = str(submitted.json()["id"])
    assert jobs.review(job_id, "demo-admin").status_code == jobs.review(job_id, "demo-approver").status_code == 200
    return job_id


def _queue(jobs: Jobs, job_id: str) -> dict[str, Any]:
    body: dict[str, Any] = jobs.client.get(
        f"/v1/admin/output-checks/{job_id}", headers=jobs.headers["demo-admin"]
    ).json()
    return body


@needs_isolation
def test_the_example_waits_for_two_checkers_and_its_computed_table_is_the_exact_count(
    jobs_gateway: Callable[..., Jobs], tmp_path: Path
) -> None:
    jobs = jobs_gateway()
    job_id = _submit_approved(jobs, EXAMPLE, EXAMPLE_TABLES)
    waiting = jobs.wait(job_id)
    # the researcher sees that the job waits, and nothing of its outputs or of the checks
    assert waiting["status"] == AWAITING_CHECK and waiting["result"] is None
    assert "rows" not in str(waiting) and "held" not in str(waiting)
    listed = jobs.client.get("/v1/admin/output-checks", headers=jobs.headers["demo-approver"]).json()["jobs"]
    assert [j["id"] for j in listed] == [job_id] and "code" not in listed[0]
    held = _queue(jobs, job_id)
    assert held["waiting"] == ["enterprises_by_status", "active_by_province"]
    assert "veilgate_job" in held["code"] and "active enterprises in" in held["stdout"]  # the code and its log
    computed, written = held["outputs"]["enterprises_by_status"], held["outputs"]["active_by_province"]
    assert (computed["source"], written["source"]) == ("computed", "written")

    # the computed table is the exact count on the registered version, after the automatic rules
    record = CatalogStore(jobs.installation.settings.data_path).get("enterprise_registry")
    path = version_path(jobs.installation.settings.data_path, "enterprise_registry", record.version)
    copy = shutil.copy(path, tmp_path / "version.duckdb")  # a version file never changes
    with duckdb.connect(str(copy), read_only=True) as con:
        exact = con.execute(
            "SELECT industry, status, count(DISTINCT credit_code) FROM records GROUP BY industry, status"
        ).fetchall()
    found = {(i, s): n for i, s, n in exact}
    industries = next(c for c in record.entry.columns if c.name == "industry").categories or ()
    statuses = next(c for c in record.entry.columns if c.name == "status").categories or ()
    grid = [{"industry": i, "status": s, "enterprises": found.get((i, s), 0)} for i in industries for s in statuses]
    expected = sdc.apply_rules(
        grid, ["industry", "status"], ["enterprises"], DisclosureControl(threshold=7, rounding=5)
    )
    assert computed["rows"] == expected
    assert any(r["enterprises"] is None for r in expected) and any(r["enterprises"] for r in expected)

    # one checker is not enough, and nobody checks an output twice
    assert jobs.check(job_id, "enterprises_by_status", "demo-admin").status_code == 200
    twice = jobs.check(job_id, "enterprises_by_status", "demo-admin")
    assert twice.status_code == 409 and "another output checker" in twice.text
    assert jobs.check(job_id, "enterprises_by_status", "demo-researcher").status_code == 403  # not a checker
    assert jobs.status(job_id)["status"] == AWAITING_CHECK and jobs.status(job_id)["result"] is None
    assert jobs.check(job_id, "enterprises_by_status", "demo-approver").status_code == 200
    assert (
        jobs.check(job_id, "active_by_province", "demo-approver", "withhold", "counts not tied to data").status_code
        == 200
    )
    outcome = jobs.status(job_id)
    assert outcome["status"] == "finished"
    outputs = outcome["result"]["result"]["outputs"]
    assert (
        outputs["enterprises_by_status"]["status"] == "released"
        and outputs["enterprises_by_status"]["rows"] == expected
    )
    assert outputs["active_by_province"] == {"status": "withheld", "reason": "withheld: by output checking"}
    assert "counts not tied to data" not in str(outcome)  # the checks stay with the administrators
    late = jobs.check(job_id, "active_by_province", "demo-admin")
    assert late.status_code == 409


MADE_UP = """import veilgate_job as vg
made_up = [{"status": s, "n": 1000} for s in ("active", "revoked", "cancelled")]
vg.table("made_up", made_up, keys=["status"], counts=["n"])
vg.table("too_big", [{"status": "active", "n": 2**53 + 1}], keys=["status"], counts=["n"])
vg.table("negative", [{"status": "active", "n": -5}], keys=["status"], counts=["n"])
vg.table("floating", [{"status": "active", "n": 1e20}], keys=["status"], counts=["n"])
vg.table("boolean", [{"status": "active", "n": True}], keys=["status"], counts=["n"])
vg.table("named", [{"status": "active", "n": 9}], keys=["status"], counts=["LEAK_NAME"])
vg.table("LEAK_NAME", [{"status": "active", "n": 9}], keys=["status"], counts=["n"])
""".replace("LEAK_NAME", LEAK.lower())


@needs_isolation
def test_made_up_and_out_of_bounds_counts_never_leave_without_two_checkers(jobs_gateway: Callable[..., Jobs]) -> None:
    jobs = jobs_gateway()
    names = ["made_up", "too_big", "negative", "floating", "boolean", "named"]
    tables = [{"name": n, "keys": ["status"], "counts": ["n"]} for n in names]
    job_id = _submit_approved(jobs, MADE_UP, tables)
    assert jobs.wait(job_id)["status"] == AWAITING_CHECK
    held = _queue(jobs, job_id)
    assert held["waiting"] == ["made_up"]  # made-up counts pass the automatic rules: people must look
    outputs = held["outputs"]
    assert outputs["made_up"]["source"] == "written"
    for name in ("too_big", "negative", "floating", "boolean"):
        assert outputs[name] == {"status": "withheld", "reason": sdc.BAD_COUNT}
    assert outputs["named"] == {"status": "withheld", "reason": sdc.SCHEMA_MISMATCH}
    assert "undeclared" not in str(outputs) and LEAK.lower() not in str(outputs)  # dropped, never named
    assert jobs.check(job_id, "made_up", "demo-admin").status_code == 200
    assert jobs.status(job_id)["result"] is None
    assert jobs.check(job_id, "made_up", "demo-approver", "withhold").status_code == 200
    outcome = jobs.status(job_id)
    assert outcome["status"] == "finished"
    assert all(o["status"] == "withheld" for o in outcome["result"]["result"]["outputs"].values())
    assert "1000" not in str(outcome["result"]["result"]) and LEAK.lower() not in str(outcome)


def test_bad_declarations_are_refused_at_submission_naming_the_rule_not_the_value(
    jobs_gateway: Callable[..., Jobs],
) -> None:
    jobs = jobs_gateway()
    refused = {
        "tables[0].name": [{"name": LEAK, "keys": [], "counts": ["n"]}],
        "tables[0].counts[0]": [{"name": "t", "keys": [], "counts": ["c" + "x" * 63]}],
        "tables[0].keys[0]": [{"name": "t", "keys": ["legal_representative"], "counts": ["n"]}],
        "tables[0].crosstab.filters[0].values": [{"name": "t", "keys": [], "counts": ["n"], "crosstab": {
            "dataset": "enterprise_registry", "count": "rows", "filters": [{"column": "status", "values": [LEAK]}]}}],
        "tables:": [],
    }  # fmt: skip
    for where, tables in refused.items():
        response = jobs.submit("print(1)\n", tables=tables)
        assert response.status_code == 422, response.text
        assert where in response.json()["detail"] and LEAK not in response.text and "x" * 63 not in response.text
    mismatch = jobs.submit("print(1)\n", tables=EXAMPLE_TABLES, outputs=["other"])
    assert mismatch.status_code == 422 and "outputs:" in mismatch.json()["detail"]
    dp = jobs.submit("print(1)\n", service="labour-analysis", datasets=["social_insurance"], tables=EXAMPLE_TABLES)
    assert dp.status_code == 422 and "tables:" in dp.json()["detail"]


def _held_job(store: JobStore, submitter: str = "admin-s") -> str:
    job = store.submit(
        submitter=submitter, organisation="o", service="s", purpose="p", grant_id="g", code="print(1)",
        code_kind="file", code_sha256="h", datasets=["d"], outputs=["a", "b"], epsilon=None,
        tables=[{"name": n, "keys": [], "counts": ["n"]} for n in ("a", "b")],
    )  # fmt: skip
    store.review(job.id, "admin-a", "approve", "ok", 2)
    store.review(job.id, "admin-b", "approve", "ok", 2)
    running = store.claim_run(job.id)
    held = {"outputs": {"a": {"status": "held", "rows": [{"n": 10}]}, "b": {"status": "held", "rows": [{"n": 20}]},
                        "c": {"status": "withheld", "reason": sdc.BAD_COUNT}}}  # fmt: skip
    assert store.hold(running, held=held, stdout="", stderr="", reason=None, notes=[]).status == AWAITING_CHECK
    with pytest.raises(Conflict, match="no longer held"):  # a run holds its job once
        store.hold(running, held=held, stdout="", stderr="", reason=None, notes=[])
    return job.id


def test_the_store_takes_two_different_checkers_other_than_the_submitter(open_store: Callable[[], JobStore]) -> None:
    store = open_store()
    job_id = _held_job(store)
    with pytest.raises(Conflict, match="their own job"):  # an administrator who submitted the job
        store.check_output(job_id, "admin-s", "a", "release", "mine")
    with pytest.raises(NotFound):  # only held outputs are checked
        store.check_output(job_id, "admin-a", "c", "release", "x")
    job, done = store.check_output(job_id, "admin-a", "a", "release", "ok")
    assert not done and job.status == AWAITING_CHECK
    with pytest.raises(Conflict, match="another output checker"):
        store.check_output(job_id, "admin-a", "a", "release", "again")
    assert not store.check_output(job_id, "admin-b", "a", "release", "ok")[1]  # b still waits
    job, done = store.check_output(job_id, "admin-a", "b", "withhold", "no")
    assert done and job.status == "checked"
    with pytest.raises(Conflict, match="no outputs waiting"):
        store.check_output(job_id, "admin-c", "b", "release", "late")
    assert store.get(job_id).tables == [{"name": n, "keys": [], "counts": ["n"]} for n in ("a", "b")]


def test_racing_last_checks_complete_the_job_once(open_store: Callable[[], JobStore]) -> None:
    store = open_store()
    job_id = _held_job(store)
    store.check_output(job_id, "admin-a", "a", "release", "ok")
    store.check_output(job_id, "admin-a", "b", "release", "ok")
    completed: list[bool] = []
    errors: list[Exception] = []

    def last(output: str) -> None:
        try:
            completed.append(open_store().check_output(job_id, "admin-b", output, "release", "ok")[1])
        except Conflict as exc:  # pragma: no cover - both decisions are distinct and must both land
            errors.append(exc)

    threads = [threading.Thread(target=last, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and sorted(completed) == [False, True]


def test_a_release_is_claimed_once_and_an_orphaned_one_waits_again(open_store: Callable[[], JobStore]) -> None:
    store = open_store()
    job_id = _held_job(store)
    for checker in ("admin-a", "admin-b"):
        for output in ("a", "b"):
            store.check_output(job_id, checker, output, "release", "ok")
    assert [j.id for j in store.checked(before=datetime.now(UTC) + timedelta(seconds=1))] == [job_id]
    releasing = store.claim_release(job_id)
    assert releasing.status == "releasing"
    with pytest.raises(Conflict):  # one process makes the result
        open_store().claim_release(job_id)
    with store._transaction() as execute:  # type: ignore[attr-defined]  # its process stopped before the result was made
        execute("UPDATE jobs SET runner = ? WHERE id = ?", (f"{socket.gethostname()}:{_finished_pid()}", job_id))
    assert store.fail_orphans() == [job_id]
    assert store.get(job_id).status == "checked"  # nothing was released: it waits to be released again
    with pytest.raises(Conflict, match="no longer held"):  # the stopped release cannot record anything
        store.finish(releasing, status="finished", result={}, stdout="", stderr="", reason=None)
    assert store.claim_release(job_id).attempt == releasing.attempt + 1
    # overdue on another host: back to waiting for its release, not failed (nothing was released)
    assert store.fail_if_running(job_id, "failed: process stopped")
    assert store.get(job_id).status == "checked" and store.get(job_id).reason is None


def _finished_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


@needs_isolation
def test_checked_tables_whose_release_never_began_are_released_by_a_worker_after_a_grace(
    jobs_gateway: Callable[..., Jobs],
) -> None:
    jobs = jobs_gateway()
    job_id = _submit_approved(jobs, EXAMPLE, EXAMPLE_TABLES)
    assert jobs.wait(job_id)["status"] == AWAITING_CHECK
    rt = jobs.client.app.state.runtime
    for checker in ("demo-admin", "demo-approver"):  # decided, then the process stopped before releasing
        for output in ("enterprises_by_status", "active_by_province"):
            rt.jobs.check_output(job_id, checker, output, "release", "ok")
    jobs.work()  # within the grace, the release its last check began may still be under way
    assert jobs.status(job_id)["status"] == "checked" and jobs.status(job_id)["result"] is None
    assert output_checking.release_unclaimed(rt, grace_seconds=0) == [job_id]  # what a worker does after it
    outcome = jobs.status(job_id)
    assert outcome["status"] == "finished"
    assert {o["status"] for o in outcome["result"]["result"]["outputs"].values()} == {"released"}
    assert output_checking.release_unclaimed(rt, grace_seconds=0) == []  # once


def test_two_accounts_of_one_person_are_one_output_checker(open_store: Callable[[], JobStore]) -> None:
    store = open_store()
    job_id = _held_job(store)
    person = {"admin-s": "ann", "admin-s2": "ann", "admin-a": "bob", "admin-a2": "bob", "admin-b": "cy"}.get
    with pytest.raises(Conflict, match="their own job"):  # the submitter's second account
        store.check_output(job_id, "admin-s2", "a", "release", "x", identity_of=lambda c: person(c) or c)
    store.check_output(job_id, "admin-a", "a", "release", "ok", identity_of=lambda c: person(c) or c)
    with pytest.raises(Conflict, match="another output checker"):
        store.check_output(job_id, "admin-a2", "a", "release", "again", identity_of=lambda c: person(c) or c)
    assert sdc.output_decisions(
        ["a"],
        [*store.get(job_id).reviews, {"output": "a", "reviewer": "admin-a2", "decision": "release"}],
        lambda c: person(c) or c,
    ) == {"a": None}


@needs_isolation
def test_how_the_run_ended_and_which_rule_refused_a_table_stay_with_the_checkers(
    jobs_gateway: Callable[..., Jobs],
) -> None:
    """How a run ends (completed, an error, a limit) and which rule refused a table are the
    job's choice, so a few bits of the data each. The checkers see them beside the values they
    release, but could not take them out of what they release: the researcher reads that the
    run failed and one reason for every table not released, nothing more. A written table comes
    out whole, in catalogue order."""
    jobs = jobs_gateway()
    code = (
        "import sys\nimport veilgate_job as vg\n"
        'vg.table("made_up", [{"status": "cancelled", "n": 40}, {"status": "active", "n": 90}],'
        ' keys=["status"], counts=["n"])\n'
        'vg.table("negative", [{"status": "active", "n": -5}], keys=["status"], counts=["n"])\n'
        "vg.finish()  # the outputs are written: how the run ends is still the job's choice\n"
        "sys.stderr.write('MemoryError\\n')\nraise SystemExit(3)\n"
    )
    tables = [{"name": name, "keys": ["status"], "counts": ["n"]} for name in ("made_up", "negative")]
    job_id = _submit_approved(jobs, code, tables)
    assert jobs.wait(job_id)["status"] == AWAITING_CHECK
    held = _queue(jobs, job_id)
    assert held["waiting"] == ["made_up"] and held["run"] == "failed: memory limit"
    assert held["outputs"]["negative"] == {"status": "withheld", "reason": sdc.BAD_COUNT}
    queued = jobs.client.get("/v1/admin/output-checks", headers=jobs.headers["demo-admin"]).json()["jobs"]
    assert [j["run"] for j in queued if j["id"] == job_id] == ["failed: memory limit"]
    result = jobs.check_all(job_id)["result"]["result"]
    assert result["reason"] == "failed: error (see reviewers)"
    assert result["outputs"]["negative"] == {"status": "withheld", "reason": "withheld: by output checking"}
    made_up = result["outputs"]["made_up"]
    assert made_up["status"] == "released"
    assert [row["status"] for row in made_up["rows"]] == ["active", "revoked", "cancelled"]
    completed = _submit_approved(jobs, code.split("vg.finish()", maxsplit=1)[0], tables)
    assert jobs.wait(completed)["status"] == AWAITING_CHECK and _queue(jobs, completed)["run"] == "completed"


def test_the_submitters_own_administrator_account_reads_no_held_output_nor_log(
    jobs_gateway: Callable[..., Jobs],
) -> None:
    """A person may hold a researcher account and an administrator account (one `person`). The
    administrator account must not read what output checking holds back from the researcher:
    the held values, the run's stdout (where a job can print raw rows), its notes."""
    jobs = jobs_gateway()
    rt = jobs.client.app.state.runtime  # type: ignore[attr-defined]
    rt.clients.add("admin-research", "Demo Public Data Administration", [Role.RESEARCHER], person="Demo Administrator")
    job = rt.jobs.submit(
        submitter="admin-research", organisation="o", service="enterprise-tables", purpose="p", grant_id="g",
        code="print(1)", code_kind="file", code_sha256="h", datasets=["enterprise_registry"], outputs=["a"],
        epsilon=None, tables=[{"name": "a", "keys": [], "counts": ["n"]}],
    )  # fmt: skip
    rt.jobs.review(job.id, "demo-approver", "approve", "ok", 2)
    rt.jobs.review(job.id, "demo-auditor", "approve", "ok", 2)
    running = rt.jobs.claim_run(job.id)
    held = {"outputs": {"a": {"status": "held", "rows": [{"n": 4242}]}}, "reason": None}
    rt.jobs.hold(running, held=held, stdout=f"raw row: {LEAK}", stderr="", reason=None, notes=["a: detail"])
    own, other = jobs.headers["demo-admin"], jobs.headers["demo-approver"]
    inspected = jobs.client.get(f"/v1/admin/jobs/{job.id}", headers=own)
    assert inspected.status_code == 200 and LEAK not in inspected.text and "stdout" not in inspected.json()
    assert jobs.client.get(f"/v1/admin/output-checks/{job.id}", headers=own).status_code == 403
    queue = jobs.client.get("/v1/admin/output-checks", headers=own).json()["jobs"]
    assert job.id not in [j["id"] for j in queue] and "4242" not in str(queue)
    # another person checks it as before
    assert LEAK in jobs.client.get(f"/v1/admin/jobs/{job.id}", headers=other).text
    assert "4242" in jobs.client.get(f"/v1/admin/output-checks/{job.id}", headers=other).text
    assert job.id in [j["id"] for j in jobs.client.get("/v1/admin/output-checks", headers=other).json()["jobs"]]
