"""`veilgate jobs run-local`: a job on the synthetic sample of its datasets, with the same API and
the same checks as a real run, and no real value anywhere near it.

For a DP service this is exactly the plan run the gateway makes at submission: the plan shown is
the plan reviewers would see.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway import sandbox_client
from gateway.domain import sdc
from gateway.domain.catalog import CatalogEntry
from gateway.domain.job_source import check_source
from gateway.domain.policy import PolicyBundle
from gateway.domain.trail import Json
from gateway.services.jobs.outputs import check_outputs
from gateway.services.jobs.planning import failure, make_plan, total_epsilon
from gateway.services.jobs.sample import SAMPLE_ROWS, sample_inputs
from gateway.services.jobs.stored import service_of
from gateway.state.ports import Job


def run_local(
    bundle: PolicyBundle, service_name: str, entries: Sequence[CatalogEntry], code: str, outputs: list[str],
    *, epsilon: str | None = None, rows: int = SAMPLE_ROWS, work_dir: Path, tables: list[Any] | None = None,
) -> Json:  # fmt: skip
    """The job on the synthetic sample: its tables checked (SDC), or its plan (DP). The sample is
    made from the catalogue entries alone, so the run needs no isolation."""
    check_source({"main.py": code.encode()}, "code")  # what a submission would refuse, said first
    service = service_of(bundle, service_name)
    declared = None
    if service.output_check == "sdc":  # the same declaration a submission needs
        declared = [t.as_json() for t in sdc.declare_tables(tables, entries)]
        outputs = [t["name"] for t in declared]
    outcome = sandbox_client.run(
        work_dir=work_dir,
        files={"main.py": code.encode()},
        write_inputs=sample_inputs(entries, rows),
        limits=sandbox_client.Limits(**service.limits.model_dump()),
        unsafe_run_without_isolation=True,
    )
    job = Job(
        id="local", submitter="local", organisation="local", service=service_name, purpose="local", grant_id="local",
        code=code, code_kind="file", code_sha256=hashlib.sha256(code.encode()).hexdigest(),
        datasets=[e.dataset for e in entries],
        outputs=outputs, epsilon=epsilon or (str(service.epsilon.default) if service.epsilon else None),
        status="local", reviews=[], created="", updated="", result=None, stdout=None, stderr=None, reason=None,
        tables=declared,
    )  # fmt: skip
    failed = failure(outcome)
    body: Json = {"completed": failed is None, "reason": None if failed is None else failed.value}
    if service.output_check == "dp":
        plan, notes = make_plan(bundle, job, entries, outcome.outputs or {})
        body |= {"plan": plan, "plan_epsilon": total_epsilon(plan)}
    else:
        results, notes = check_outputs(None, job, service=service, entries=entries, outcome=outcome)
        body |= {"outputs": results}
    return body | {"notes": notes, "stdout": outcome.stdout, "stderr": outcome.stderr}
