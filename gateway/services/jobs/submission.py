"""Step 1 of a job: what can be checked at submission, before anyone reviews it or any data is read.

A job on a DP service is stored as `planning`: its plan run (on the synthetic sample) comes next,
and the job waits for its reviews only with its plan."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from gateway.domain import sdc
from gateway.domain.aggregate import epsilon_text
from gateway.domain.job_plan import OUTPUT_NAME
from gateway.domain.job_source import check_source
from gateway.domain.policy import authorize, check_not_frozen
from gateway.domain.principal import Principal
from gateway.errors import InvalidRequest, ServiceUnavailable
from gateway.services import policy_admin
from gateway.services.jobs.stored import job_files, service_of
from gateway.services.needs import HasFreezes, HasJobs
from gateway.services.policy_admin import PolicyReader
from gateway.state.ports import Job


class SubmissionNeeds(PolicyReader, HasFreezes, HasJobs, Protocol):
    """A submission: the bundle, the freezes, the catalogue and the job store."""


MAX_CODE_BYTES = 256 * 1024
MAX_OUTPUTS = 20


@dataclass(frozen=True, slots=True)
class Submission:
    service: str
    purpose: str
    code: str | None
    """One Python file, or None when `archive` is given."""
    datasets: list[str]
    outputs: list[str]
    epsilon: str | None = None
    archive: bytes | None = None
    """A zip archive with `main.py` at its top."""
    tables: list[Any] | None = None
    """For SDC services: every output table declared (`gateway.domain.sdc.declare_tables`)."""


def submit(rt: SubmissionNeeds, principal: Principal, submission: Submission) -> Job:
    """Step 1: checks that need no data; the job then waits for its reviews."""
    policy = policy_admin.current(rt)
    bundle = policy.bundle
    service = service_of(bundle, submission.service)
    grant_id, _grant = authorize(bundle, principal, submission.service, submission.purpose, datetime.now(UTC))
    organisation = bundle.organisation_of(principal)
    for dataset in submission.datasets:
        check_not_frozen(
            rt.freezes.active(),
            consumer=principal.client_id,
            organisation=organisation,
            service=submission.service,
            dataset=dataset,
        )
    if (submission.code is None) == (submission.archive is None):
        raise InvalidRequest("code: give the code as one file (`code`) or a zip archive (`archive`), not both")
    if submission.code is not None:
        kind, stored = "file", submission.code
        if len(submission.code.encode()) > MAX_CODE_BYTES:
            raise InvalidRequest("code: at most 256 KiB")
    else:
        kind, stored = "archive", base64.b64encode(submission.archive or b"").decode()
    files, code_sha256 = job_files(stored, kind)  # an archive is checked here, before review
    check_source(files, "code" if kind == "file" else "archive")  # what reviewers read is what runs
    unknown = [d for d in submission.datasets if d not in service.datasets]
    if not submission.datasets or unknown or len(set(submission.datasets)) != len(submission.datasets):
        raise InvalidRequest(f"datasets: one or more of {', '.join(service.datasets)}, each once")
    outputs, tables = submission.outputs, None
    if service.output_check == "sdc":  # every table declared: names, public category keys, counts
        tables = [t.as_json() for t in sdc.declare_tables(submission.tables, [rt.catalog.get(d).entry for d in
                                                                               submission.datasets])]  # fmt: skip
        if outputs and outputs != [t["name"] for t in tables]:
            raise InvalidRequest("outputs: the names of the declared tables, in their order (or leave it out)")
        outputs = [t["name"] for t in tables]
    elif submission.tables is not None:
        raise InvalidRequest("tables: this job service releases DP statistics, not declared tables")
    if not 1 <= len(outputs) <= MAX_OUTPUTS or len(set(outputs)) != len(outputs):
        raise InvalidRequest(f"outputs: 1 to {MAX_OUTPUTS} different names")
    if not all(isinstance(o, str) and OUTPUT_NAME.fullmatch(o) for o in outputs):
        # SECURITY: names are released with the outputs; the rule, never the name, is said back.
        raise InvalidRequest("outputs: each name is 1 to 63 of a-z, 0-9 and _, starting with a letter")
    epsilon = None
    if service.output_check == "dp":
        if service.epsilon is None:  # unreachable: the policy check requires it
            raise ServiceUnavailable("this job service has no epsilon range")
        epsilon = epsilon_text(service.epsilon.charge(submission.epsilon, "job service"))
    elif submission.epsilon is not None:
        raise InvalidRequest("epsilon: this job service checks outputs by disclosure control, not DP")
    job = rt.jobs.submit(
        submitter=principal.client_id,
        organisation=organisation,
        service=submission.service,
        purpose=submission.purpose,
        grant_id=grant_id,
        code=stored,
        code_kind=kind,
        code_sha256=code_sha256,
        datasets=submission.datasets,
        outputs=outputs,
        epsilon=epsilon,
        tables=tables,
        # a DP job's code runs first on the synthetic sample only, to make the plan reviewers approve
        status="planning" if service.output_check == "dp" else "submitted",
    )
    return job  # a `planning` job is `runnable`: the worker runs its plan on the sample
