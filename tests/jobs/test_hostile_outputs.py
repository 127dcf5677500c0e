"""Hostile jobs that try to carry data out through what they ask for or what they are told.

On a DP service a job's code runs only on the synthetic sample, to make its plan; the real run is
the gateway computing the approved plan. Every planned output passes the checks a template gets,
and refusals name the parameter and the rule, never the value. Nothing a job names or raises
reaches the researcher unless it was declared; freezes and revokes during a run release nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pyarrow.parquet as pq
import pytest

from gateway import sandbox_client
from gateway.domain.job_vocabulary import Reason
from gateway.domain.mock_rows import mock_rows
from gateway.services import charging
from gateway.services.jobs import planning
from tests.conftest import CANARY
from tests.jobs.conftest import Jobs, needs_isolation

pytestmark = needs_isolation
DP = {"service": "labour-analysis", "datasets": ["social_insurance"], "epsilon": "1"}
VOCABULARY = {r.value for r in Reason}


def _values(jobs: Jobs) -> list[str]:
    """Values a job could read: keys of the synthetic sample of social_insurance, and keys and
    names of the real enterprise register."""
    rt = jobs.client.app.state.runtime  # type: ignore[attr-defined]
    sample = mock_rows(rt.catalog.get("social_insurance").entry, 50, seed=1)
    registry = pq.read_table(jobs.installation.source / "enterprise_registry.parquet").to_pylist()[:20]
    found = [str(r["person_id"]) for r in sample if r["person_id"]] + [CANARY]
    return found + [r["credit_code"] for r in registry] + [r["name"] for r in registry]


def _leaked(jobs: Jobs, view: Any) -> list[str]:
    text = str(view)
    return [v[:8] for v in _values(jobs) if v in text]


def _said(view: dict[str, Any]) -> list[str]:
    """Every reason the researcher's view of a job holds."""
    found = [view["reason"]] if view["reason"] and view["status"] != "rejected" else []
    outputs = (view.get("result") or {}).get("result", {}).get("outputs", {})
    found += [o["reason"] for o in outputs.values() if "reason" in o]
    found += [p["reason"] for p in view.get("plan") or [] if "reason" in p]
    return found


def _plan(jobs: Jobs, code: str, outputs: list[str]) -> dict[str, Any]:
    submitted = jobs.submit(code, outputs=outputs, **DP)
    assert submitted.status_code == 201, submitted.text
    assert submitted.json()["status"] == "planning"
    return jobs.planned(submitted.json()["id"])


def test_undeclared_and_oversized_names_are_never_named_back(jobs_gateway: Callable[..., Jobs]) -> None:
    jobs = jobs_gateway()
    for bad in ("x" * 64, "Mean", "a-b", "9zq", "a" * 300):
        refused = jobs.submit("print(1)\n", outputs=[bad], **DP)
        assert refused.status_code == 422 and bad not in refused.text, refused.text
    code = (
        "import veilgate_job as vg\n"
        "t = vg.dataset('social_insurance').to_pylist()\n"
        "for r in t[:5]:\n"
        "    vg.dp('leak_' + r['person_id'], 'count', 'social_insurance')\n"
        "vg.dp('n', 'count', 'social_insurance')\n"
    )
    view = _plan(jobs, code, ["n"])
    assert view["status"] == "submitted"
    assert [p["name"] for p in view["plan"]] == ["n"] and view["plan"][0]["status"] == "planned"
    assert "leak_" not in str(view) and _leaked(jobs, view) == []
    assert "5 undeclared output(s) dropped" in jobs.admin_view(view["id"])["notes"]


def test_values_smuggled_in_filters_are_refused_by_parameter_and_rule(jobs_gateway: Callable[..., Jobs]) -> None:
    jobs = jobs_gateway()
    code = (
        "import veilgate_job as vg\n"
        "r = vg.dataset('social_insurance').to_pylist()[0]\n"
        "vg.dp('by_value', 'count', 'social_insurance', filters={'industry': [r['person_id']]})\n"
        "vg.dp('by_name', 'count', 'social_insurance', filters={r['person_id']: ['A']})\n"
        "vg.dp('by_group', 'count', 'social_insurance', group_by=[r['person_id']])\n"
        "vg.dp('by_true', 'count', 'social_insurance', filters={'paid': [1]})\n"
    )
    view = _plan(jobs, code, ["by_value", "by_name", "by_group", "by_true"])
    plan = {p["name"]: p for p in view["plan"]}
    assert plan["by_value"] == {"name": "by_value", "status": "withheld", "reason": "withheld: not a public category",
                                "parameter": "filters.industry"}  # fmt: skip
    assert plan["by_name"]["reason"] == "withheld: no such column" and plan["by_name"]["parameter"] == "filters"
    assert plan["by_group"]["reason"] == "withheld: no such column" and plan["by_group"]["parameter"] == "group_by"
    assert plan["by_true"]["reason"] == "withheld: not a public category"  # 1 is not True
    assert _leaked(jobs, view) == [] and set(_said(view)) <= VOCABULARY


@pytest.mark.parametrize(
    ("ask", "reason", "parameter"),
    [
        ("column='no_such_column'", "withheld: no such column", "column"),
        ("group_by=['no_such_column']", "withheld: no such column", "group_by"),
        ("group_by=['employer_code']", "withheld: on the negative list", "group_by.employer_code"),
        ("filters={'employer_code': ['x']}", "withheld: on the negative list", "filters.employer_code"),
        ("group_by=['person_id']", "withheld: not a public column", "group_by.person_id"),
        ("group_by=['paid']", "withheld: not a public column", "group_by.paid"),
        ("group_by=['month']", "withheld: not a public category", "group_by.month"),
        ("column='industry'", "withheld: outside the service's rules", "column"),
    ],
)
def test_a_planned_output_gets_every_check_a_template_gets(
    jobs_gateway: Callable[..., Jobs], ask: str, reason: str, parameter: str
) -> None:
    jobs = jobs_gateway()
    code = f"import veilgate_job as vg\nvg.dp('asked', 'sum', 'social_insurance', {ask})\n"
    if "column=" not in ask:
        code = code.replace("'sum'", "'count'")
    view = _plan(jobs, code, ["asked"])
    assert view["status"] == "submitted", view  # a refusal, not a crash (no KeyError)
    assert view["plan"] == [{"name": "asked", "status": "withheld", "reason": reason, "parameter": parameter}]
    assert "no_such_column" not in str(view) and "'x'" not in str(view)


def test_a_data_dependent_plan_comes_from_the_sample_and_the_real_run_runs_no_code(
    jobs_gateway: Callable[..., Jobs], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job picks its query from what it reads. Its plan is made on the synthetic sample, and
    the real run computes that plan without running the code: the real data cannot steer it."""
    jobs = jobs_gateway()
    code = (
        "import veilgate_job as vg\n"
        "t = vg.dataset('social_insurance')\n"
        "group = 'industry' if t.num_rows == 1000 else 'region'  # the sample has 1000 rows\n"
        "vg.dp('chosen', 'count', 'social_insurance', group_by=[group])\n"
    )
    view = _plan(jobs, code, ["chosen"])
    (planned,) = view["plan"]
    assert planned["group_by"] == ["industry"] and planned["epsilon"] == "1" and view["plan_epsilon"] == "1"
    admin = jobs.admin_view(view["id"])
    assert admin["code"] == code and admin["plan"] == view["plan"]  # side by side for the reviewers
    ran: list[Any] = []
    monkeypatch.setattr(sandbox_client, "run", lambda **kw: ran.append(kw))  # no code may run from here on
    assert jobs.review(view["id"], "demo-admin").status_code == 200
    assert jobs.review(view["id"], "demo-approver").status_code == 200
    reviews = jobs.admin_view(view["id"])["reviews"]
    assert {r["plan_sha256"] for r in reviews} == {view["plan_sha256"]}
    outcome = jobs.wait(view["id"])
    assert outcome["status"] == "finished" and ran == [], outcome
    released = outcome["result"]["result"]["outputs"]["chosen"]
    assert released["status"] == "released" and {r["group"]["industry"] for r in released["rows"]} >= {"A", "T"}
    assert "region" not in str(released["rows"])


def test_a_changed_plan_after_approval_is_not_computed(jobs_gateway: Callable[..., Jobs]) -> None:
    import json
    import sqlite3

    jobs = jobs_gateway()
    view = _plan(jobs, "import veilgate_job as vg\nvg.dp('n', 'count', 'social_insurance')\n", ["n"])
    assert jobs.review(view["id"], "demo-admin").status_code == 200
    swapped = [{**view["plan"][0], "group_by": ["region"]}]
    store = jobs.installation.settings.state_dir / "jobs" / "jobs.sqlite3"
    with sqlite3.connect(store) as conn:  # someone with access to the store swaps the plan
        conn.execute("UPDATE jobs SET plan = ? WHERE id = ?", (json.dumps(swapped), view["id"]))
    assert jobs.review(view["id"], "demo-approver").status_code == 200
    outcome = jobs.wait(view["id"])
    assert outcome["status"] == "failed" and outcome["reason"] == "failed: plan not approved"
    assert outcome["result"] is None


def test_a_job_that_prints_or_raises_values_shows_none_of_them(jobs_gateway: Callable[..., Jobs]) -> None:
    jobs = jobs_gateway()
    code = (
        "import veilgate_job as vg\n"
        "t = vg.dataset('enterprise_registry').to_pylist()\n"
        "print(t[:20])\n"
        "raise SystemExit(str([r['credit_code'] for r in t[:20]] + [r['name'] for r in t if 'CANARY' in r['name']]))\n"
    )
    outcome = jobs.run(code)
    assert outcome["status"] == "failed" and outcome["reason"] == "failed: error (see reviewers)"
    assert _leaked(jobs, outcome) == [] and set(_said(outcome)) <= VOCABULARY
    assert CANARY in jobs.admin_view(outcome["id"])["stderr"]  # for the reviewers
    dp = jobs.submit(code.replace("enterprise_registry", "social_insurance").replace("credit_code", "person_id")
                     .replace("r['name']", "r['region']"), outputs=["n"], **DP)  # fmt: skip
    planned = jobs.planned(dp.json()["id"])
    assert planned["status"] == "failed" and planned["reason"] == "failed: error (see reviewers)"
    assert _leaked(jobs, planned) == [] and "person" not in str(planned)


def _slow(seconds: int) -> str:
    return (
        "import time, veilgate_job as vg\n"
        f"time.sleep({seconds})\n"
        "vg.table('counts', [{'industry': 'C', 'n': 100}], keys=['industry'], counts=['n'])\n"
    )


def _wait_running(jobs: Jobs, job_id: str) -> None:
    jobs.work_in_background()  # the worker runs it while the test acts
    deadline = time.monotonic() + 60
    while jobs.status(job_id)["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_a_freeze_during_a_run_releases_nothing(jobs_gateway: Callable[..., Jobs]) -> None:
    jobs = jobs_gateway()
    job_id = jobs.submit(_slow(4)).json()["id"]
    assert jobs.review(job_id, "demo-admin").status_code == 200
    assert jobs.review(job_id, "demo-approver").status_code == 200
    _wait_running(jobs, job_id)
    stop = {"kind": "dataset", "name": "enterprise_registry", "reason": "investigation"}
    assert jobs.client.post("/v1/admin/freeze", json=stop, headers=jobs.headers["demo-admin"]).status_code == 201
    outcome = jobs.wait(job_id)
    assert outcome["status"] == "failed" and outcome["reason"] == "stopped: frozen" and outcome["result"] is None
    assert "investigation" not in str(outcome)


def test_a_grant_revoked_during_a_run_releases_nothing(jobs_gateway: Callable[..., Jobs]) -> None:
    jobs = jobs_gateway()
    job_id = jobs.submit(_slow(4)).json()["id"]
    assert jobs.review(job_id, "demo-admin").status_code == 200
    assert jobs.review(job_id, "demo-approver").status_code == 200
    _wait_running(jobs, job_id)
    revoked = jobs.client.delete(
        "/v1/admin/grants/labour-research-2026", params={"reason": "ended"}, headers=jobs.headers["demo-admin"]
    )
    assert revoked.status_code < 300, revoked.text
    outcome = jobs.wait(job_id)
    assert outcome["status"] == "failed" and outcome["reason"] == "stopped: grant revoked" and outcome["result"] is None


def test_a_submitter_disabled_during_a_run_releases_nothing(jobs_gateway: Callable[..., Jobs]) -> None:
    """Disabling an account is the administrators' stop for a person: a run of theirs must not
    go on reading the data and leave a signed result waiting for the day it is enabled again."""
    jobs = jobs_gateway()
    job_id = jobs.submit(_slow(4)).json()["id"]
    assert jobs.review(job_id, "demo-admin").status_code == 200
    assert jobs.review(job_id, "demo-approver").status_code == 200
    _wait_running(jobs, job_id)
    disabled = jobs.client.delete("/v1/admin/consumers/demo-researcher", headers=jobs.headers["demo-admin"])
    assert disabled.status_code == 204, disabled.text
    deadline = time.monotonic() + 120
    while jobs.admin_view(job_id)["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    outcome = jobs.admin_view(job_id)
    assert outcome["status"] == "failed" and outcome["reason"] == "stopped: account disabled", outcome["reason"]
    assert outcome["result"] is None


def test_a_dp_plan_stopped_before_release_releases_nothing(
    jobs_gateway: Callable[..., Jobs], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A freeze that lands while the gateway computes the plan: nothing is released (what was
    charged stays charged: the gateway fails closed)."""
    jobs = jobs_gateway()
    view = _plan(jobs, "import veilgate_job as vg\nvg.dp('n', 'count', 'social_insurance')\n", ["n"])
    original = charging.run

    def frozen_meanwhile(rt: Any, charges: Any) -> Any:
        stop = {"kind": "consumer", "name": "demo-researcher", "reason": "investigation"}
        assert jobs.client.post("/v1/admin/freeze", json=stop, headers=jobs.headers["demo-admin"]).status_code == 201
        return original(rt, charges)

    monkeypatch.setattr(charging, "run", frozen_meanwhile)
    assert jobs.review(view["id"], "demo-admin").status_code == 200
    assert jobs.review(view["id"], "demo-approver").status_code == 200
    outcome = jobs.wait(view["id"])
    assert outcome["status"] == "failed" and outcome["reason"] == "stopped: frozen" and outcome["result"] is None


def test_the_plan_of_the_example_is_what_run_local_shows(jobs_gateway: Callable[..., Jobs], tmp_path: Any) -> None:
    from gateway.services.jobs import run_local
    from tests.conftest import REPO

    jobs = jobs_gateway()
    code = (REPO / "sandbox" / "examples" / "wage_by_industry.py").read_text()
    outputs = ["mean_wage_by_industry", "records_by_industry_paid"]
    view = _plan(jobs, code, outputs)
    bundle = planning.policy_admin.current(jobs.client.app.state.runtime).bundle  # type: ignore[attr-defined]
    entries = [jobs.client.app.state.runtime.catalog.get("social_insurance").entry]  # type: ignore[attr-defined]
    local = run_local(bundle, "labour-analysis", entries, code, outputs, epsilon="1", work_dir=tmp_path)
    assert local["plan"] == view["plan"] and local["plan_epsilon"] == view["plan_epsilon"] == "1"
