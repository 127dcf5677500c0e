"""Step 1 of a job: what can be checked at submission, before anyone reviews it or any data is read."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.domain.aggregate import epsilon_text
from gateway.domain.jobs import JobService, unpack_archive
from gateway.domain.policy import PolicyBundle, authorize, check_not_frozen
from gateway.domain.principal import Principal
from gateway.errors import InvalidRequest, NotFound, ServiceUnavailable
from gateway.jobs import Job
from gateway.services import policy_admin
from gateway.services.runtime import Runtime

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


def job_files(code: str, kind: str) -> tuple[dict[str, bytes], str]:
    """The files a stored job runs, and the SHA-256 of what was submitted (the file's text, or
    the archive's bytes): what reviewers approve and what a run checks again."""
    if kind == "archive":
        data = base64.b64decode(code)
        return unpack_archive(data), hashlib.sha256(data).hexdigest()
    return {"main.py": code.encode()}, hashlib.sha256(code.encode()).hexdigest()


def service_of(bundle: PolicyBundle, name: str) -> JobService:
    service = bundle.job_services.get(name)
    if service is None:
        raise NotFound(f"no job service named {name[:64]!r}")
    return service


def submit(rt: Runtime, principal: Principal, submission: Submission) -> Job:
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
    _files, code_sha256 = job_files(stored, kind)  # an archive is checked here, before review
    unknown = [d for d in submission.datasets if d not in service.datasets]
    if not submission.datasets or unknown or len(set(submission.datasets)) != len(submission.datasets):
        raise InvalidRequest(f"datasets: one or more of {', '.join(service.datasets)}, each once")
    if not 1 <= len(submission.outputs) <= MAX_OUTPUTS or len(set(submission.outputs)) != len(submission.outputs):
        raise InvalidRequest(f"outputs: 1 to {MAX_OUTPUTS} different names")
    epsilon = None
    if service.output_check == "dp":
        if service.epsilon is None:  # unreachable: the policy check requires it
            raise ServiceUnavailable("this job service has no epsilon range")
        epsilon = epsilon_text(service.epsilon.charge(submission.epsilon, "job service"))
    elif submission.epsilon is not None:
        raise InvalidRequest("epsilon: this job service checks outputs by disclosure control, not DP")
    return rt.jobs.submit(
        submitter=principal.client_id,
        organisation=organisation,
        service=submission.service,
        purpose=submission.purpose,
        grant_id=grant_id,
        code=stored,
        code_kind=kind,
        code_sha256=code_sha256,
        datasets=submission.datasets,
        outputs=submission.outputs,
        epsilon=epsilon,
    )
