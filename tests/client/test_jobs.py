"""Jobs from the client: a local run on the synthetic sample, with the gateway's output checks."""

from __future__ import annotations

import pytest
from veilgate_client import Gateway, Job
from veilgate_client.jobs import wait

from tests.client.conftest import Served
from tests.conftest import REPO

EXAMPLE = REPO / "sandbox" / "examples" / "enterprises_by_status.py"
TABLES = REPO / "sandbox" / "examples" / "enterprises_by_status.tables.json"


def test_a_local_run_gives_the_checked_tables_of_the_synthetic_sample(served: Served) -> None:
    run = Gateway.run_local(EXAMPLE, service="enterprise-tables", datasets=["enterprise_registry"], tables=TABLES,
                            config=served.root / "veilgate.toml", rows=400)  # fmt: skip
    assert run.completed and set(run.outputs) == {"enterprises_by_status", "active_by_province"}
    table = run.tables()["active_by_province"]
    assert list(table.columns) == ["province", "enterprises"] and len(table) > 0


class _Statuses:
    """A gateway whose job goes through `statuses`, one per look (the last one repeated)."""

    def __init__(self, statuses: list[str]) -> None:
        self.statuses = statuses
        self.looks = 0

    def job(self, job_id: str) -> Job:
        status = self.statuses[min(self.looks, len(self.statuses) - 1)]
        self.looks += 1
        return Job(self, {"id": job_id, "status": status, "reviews": [{}] if status == "approved" else []})  # type: ignore[arg-type]


def test_wait_reports_each_new_status_once_and_stops_when_done(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[str] = []
    gateway = _Statuses(["submitted", "submitted", "approved", "running", "running", "finished"])
    done = wait(gateway, "j1", timeout=10, poll=0, progress=lambda job: seen.append(job.status))  # type: ignore[arg-type]
    assert done.status == "finished" and done.done and gateway.looks == 6
    assert seen == ["submitted", "approved", "running", "finished"]
    wait(_Statuses(["approved", "rejected"]), "j2", timeout=10, poll=0, progress=True)  # type: ignore[arg-type]
    assert capsys.readouterr().err.splitlines() == ["job j2: approved (1 review(s))", "job j2: rejected"]
    with pytest.raises(TimeoutError, match="still running"):
        wait(_Statuses(["running"]), "j3", timeout=0, poll=0, progress=False)  # type: ignore[arg-type]
