"""Approved analysis code (jobs): submit, review, run in the sandbox, check outputs, release.

1. submit: a grant of the researcher covers the job service and the purpose; the datasets are
   among the service's; the code is stored with its SHA-256;
2. review: administrators approve or reject with a reason; nobody reviews their own job, and the
   service says how many different reviewers must approve;
3. run (once approved, in the background): the code is read afresh and run only if its hash is
   the one approved; the declared datasets (without negative-listed columns) are exported for
   the sandbox; the sandbox runs it isolated and limited;
4. check each declared output: tables through disclosure control, statistics through
   differential privacy (computed by the gateway, charged to the ledger like aggregates);
   anything else is withheld with a reason;
5. release: one signed, audited document for the job; stdout and stderr are kept for
   administrators only.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway import sandbox_client
from gateway.domain.aggregate import AggregateTemplate, FilterRule, epsilon_text, plan
from gateway.domain.budget import Amount, micro_epsilon
from gateway.domain.catalog import CatalogEntry, ColumnType
from gateway.domain.jobs import JobService, check_table, public_values, unpack_archive
from gateway.domain.policy import PolicyBundle, authorize, check_not_frozen
from gateway.domain.principal import Principal
from gateway.domain.trail import AuditEvent, Cost, Decision, Json, PrivacySpent, utc_now
from gateway.errors import InvalidRequest, NotFound, ServiceUnavailable, VeilgateError
from gateway.jobs import Job
from gateway.services import aggregate, charging, policy_admin
from gateway.services.release import prepare_release, release
from gateway.services.runtime import Runtime

log = logging.getLogger("veilgate.jobs")
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


def _service(bundle: PolicyBundle, name: str) -> JobService:
    service = bundle.job_services.get(name)
    if service is None:
        raise NotFound(f"no job service named {name[:64]!r}")
    return service


def submit(rt: Runtime, principal: Principal, submission: Submission) -> Job:
    """Step 1: checks that need no data; the job then waits for its reviews."""
    policy = policy_admin.current(rt)
    bundle = policy.bundle
    service = _service(bundle, submission.service)
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


def review(rt: Runtime, reviewer: Principal, job_id: str, decision: str, reason: str) -> Job:
    """Step 2; the review that completes the approvals starts the run in the background."""
    job = rt.jobs.get(job_id)
    service = _service(policy_admin.current(rt).bundle, job.service)
    reviewed = rt.jobs.review(job_id, reviewer.client_id, decision, reason, service.reviewers)
    if reviewed.status == "approved":
        _start(rt, job_id)
    return reviewed


def requeue(rt: Runtime, admin: Principal, job_id: str, reason: str) -> Job:
    """Run again a failed job that released nothing (`JobStore.requeue`), at once."""
    requeued = rt.jobs.requeue(job_id, admin.client_id, reason)
    _start(rt, job_id)
    return requeued


def _start(rt: Runtime, job_id: str) -> None:
    threading.Thread(target=run, args=(rt, job_id), name=f"job-{job_id}", daemon=True).start()


UNCLAIMED_GRACE_SECONDS = 60
"""How long an approved job may wait for the run its approval started, before any process
that shares the job store starts one (only one of them runs it: `JobStore.claim_run`)."""


def start_unclaimed(rt: Runtime, *, grace_seconds: float = UNCLAIMED_GRACE_SECONDS) -> list[str]:
    """Start the approved jobs that no process runs: the approving process stopped before its run
    began. At startup (no grace: this process approved nothing yet) and every checkpoint
    interval. Returns their ids."""
    waiting = rt.jobs.waiting(approved_before=datetime.now(UTC) - timedelta(seconds=grace_seconds))
    for job in waiting:
        _start(rt, job.id)
    return [job.id for job in waiting]


OVERDUE_GRACE_SECONDS = 600
"""Beyond its service's wall-clock limit, what a run may still take: exporting its inputs,
checking its outputs, releasing them."""


def fail_overdue(rt: Runtime, now: datetime | None = None) -> list[str]:
    """Jobs still `running` long after their sandbox's wall-clock limit: whatever process ran them
    stopped, on this host or another (replicas share the job store). Marked failed, so nobody
    waits for them forever; returns their ids."""
    now = now or datetime.now(UTC)
    bundle = policy_admin.current(rt).bundle
    failed = []
    for job in rt.jobs.running():
        service = bundle.job_services.get(job.service)
        wall = service.limits.wall_seconds if service is not None else 0
        if now - datetime.fromisoformat(job.updated) > timedelta(seconds=wall + OVERDUE_GRACE_SECONDS):
            reason = "the gateway process running this job stopped (it is long past its time limit); submit it again"
            if rt.jobs.fail_if_running(job.id, reason):
                failed.append(job.id)
    return failed


def run(rt: Runtime, job_id: str) -> Job:
    """Steps 3 to 5. Never raises: the outcome, good or bad, is recorded on the job."""
    try:
        job = rt.jobs.claim_run(job_id)
    except VeilgateError:
        return rt.jobs.get(job_id)
    try:
        return _run(rt, job)
    except VeilgateError as refused:
        return rt.jobs.finish(job_id, status="failed", result=None, stdout="", stderr="", reason=str(refused))
    except Exception:
        log.exception("job %s failed (this is a bug)", job_id)
        return rt.jobs.finish(
            job_id, status="failed", result=None, stdout="", stderr="", reason="internal error; see the server log"
        )


def _run(rt: Runtime, job: Job) -> Job:
    policy = policy_admin.current(rt)
    bundle = policy.bundle
    service = _service(bundle, job.service)
    # 3. Nothing it touches was stopped since its submission (raises Frozen, recorded as the reason);
    for dataset in job.datasets:
        check_not_frozen(
            rt.freezes.active(), consumer=job.submitter, organisation=job.organisation, service=job.service,
            dataset=dataset,
        )  # fmt: skip
    # and only the exact code approved runs.
    code, kind, recorded = rt.jobs.code_of(job.id)
    try:
        files, digest = job_files(code, kind)
    except (InvalidRequest, ValueError):
        files, digest = {}, ""
    approved = {r["code_sha256"] for r in job.reviews if r["decision"] == "approve"}
    if digest != recorded or approved != {recorded}:
        return rt.jobs.finish(
            job.id, status="failed", result=None, stdout="", stderr="",
            reason="the code is not the code that was approved; it was not run",
        )  # fmt: skip
    records = {d: rt.catalog.get(d) for d in job.datasets}
    banned = set(bundle.negative_list.columns)
    limits = service.limits

    def write_inputs(target: Path) -> None:
        for name, record in records.items():
            columns = [c.name for c in record.entry.columns if f"{name}.{c.name}" not in banned]
            with rt.domain.snapshot(name, record.version) as snapshot:
                snapshot.export(target / f"{name}.parquet", columns)

    outcome = sandbox_client.run(
        work_dir=rt.settings.state_dir / "jobs" / "runs",
        hide=sorted({rt.settings.state_dir.resolve(), rt.settings.data_path.resolve()}),
        files=files,
        write_inputs=write_inputs,
        limits=sandbox_client.Limits(**limits.model_dump()),
        unsafe_run_without_isolation=rt.settings.sandbox_unsafe_run_without_isolation,
    )
    entries = [r.entry for r in records.values()]
    # 4.
    results = check_outputs(rt, bundle, job, service=service, entries=entries, outcome=outcome)
    failed = outcome.timed_out or outcome.exit_code != 0
    reason = _failure(outcome) if failed else None
    document = _release(rt, job, results, outcome=outcome, reason=reason, policy_version=policy.version)
    status = "failed" if failed and not any(r["status"] == "released" for r in results.values()) else "finished"
    return rt.jobs.finish(
        job.id, status=status, result=document, stdout=outcome.stdout, stderr=outcome.stderr, reason=reason
    )


def _failure(outcome: sandbox_client.Outcome) -> str:
    if outcome.timed_out:
        return "the job ran past its wall-clock limit and was stopped"
    if outcome.exit_code in (-9, 137, 1) and "sigprocmask" in outcome.stderr:
        return "the job used up its CPU time and was stopped"
    if "MemoryError" in outcome.stderr:
        return "the job ran out of memory"
    return f"the job exited with status {outcome.exit_code}; an administrator can see its error output"


def check_outputs(
    rt: Runtime | None,
    bundle: PolicyBundle,
    job: Job,
    *,
    service: JobService,
    entries: Sequence[CatalogEntry],
    outcome: sandbox_client.Outcome,
) -> dict[str, Json]:
    """Every declared output, released or withheld with a reason (step 4).

    With `rt` None (a local run on the synthetic sample), DP outputs are planned and checked
    but not computed: there is no data to protect and no budget to charge.
    """
    produced = outcome.outputs or {}
    public = public_values(entries)
    results: dict[str, Json] = {}
    dp_wanted: list[tuple[str, Any]] = []
    for name in job.outputs:
        output = produced.get(name)
        if not isinstance(output, dict):
            results[name] = {"status": "withheld", "reason": outcome.problem or "the job did not produce this output"}
            continue
        kind = output.get("kind")
        if kind == "table" and service.output_check == "sdc":
            checked = check_table(output, public, service.sdc)
            results[name] = (
                {"status": "released", "kind": "table", "keys": output["keys"], "counts": output["counts"],
                 "rows": checked.released}
                if checked.released is not None
                else {"status": "withheld", "reason": checked.reason}
            )  # fmt: skip
        elif kind == "dp" and service.output_check == "dp":
            dp_wanted.append((name, output))
        else:
            how = "tables (vg.table)" if service.output_check == "sdc" else "DP statistics (vg.dp)"
            results[name] = {"status": "withheld", "reason": f"this job service releases only {how}"}
    for name in sorted(set(produced) - set(job.outputs)):
        results[name] = {"status": "withheld", "reason": "this output was not declared when the job was submitted"}
    if dp_wanted:
        results |= _dp_outputs(rt, bundle, job, entries, dp_wanted)
    return results


def _dp_outputs(
    rt: Runtime | None, bundle: PolicyBundle, job: Job, entries: Sequence[CatalogEntry], wanted: list[tuple[str, Any]]
) -> dict[str, Json]:
    """DP statistics the job asked for, planned like aggregate templates and charged together."""
    results: dict[str, Json] = {}
    by_name = {e.dataset: e for e in entries}
    total = micro_epsilon(job.epsilon or "0.000001")
    share = max(1, total // len(wanted))
    plans = []
    for name, output in wanted:
        try:
            entry = by_name.get(str(output.get("dataset")))
            if entry is None:
                raise InvalidRequest(f"dataset {str(output.get('dataset'))[:40]!r} was not declared by this job")
            filters = output.get("filters") or {}
            if not isinstance(filters, dict):
                raise InvalidRequest("filters: give a mapping of column to values")
            template = AggregateTemplate.model_validate(
                {
                    "title": f"job {job.id} output {name}",
                    "dataset": entry.dataset,
                    "measure": output.get("measure"),
                    "column": output.get("column"),
                    "filters": {column: FilterRule() for column in filters},
                    "group_by": list(output.get("group_by") or []),
                    "epsilon": {"default": epsilon_text(share), "max": epsilon_text(share)},
                }
            )
            if template.measure.value not in ("count", "sum", "mean"):
                raise InvalidRequest("measure: count, sum or mean")
            version = rt.catalog.get(entry.dataset).version if rt is not None else "local"
            compiled = plan(
                name, template, entry, version, {"filters": filters, "group_by": list(template.group_by)}, epsilon=None
            )
            plans.append((name, compiled))
        except (InvalidRequest, ValueError) as bad:
            results[name] = {"status": "withheld", "reason": f"not a statistic the gateway can release: {bad}"[:300]}
    if rt is None:
        for name, compiled in plans:
            results[name] = {
                "status": "checked",
                "kind": "dp",
                "rows": len(compiled.cells),
                "epsilon": str(compiled.epsilon),
            }
        return results
    if not plans:
        return results
    charges = []
    for _name, compiled in plans:
        charges.append(
            charging.Charge(
                compiled.key,  # the same question as an aggregate's: one answer, charged once
                compiled.amount,
                bundle.budget_accounts(
                    grant_id=job.grant_id,
                    consumer=job.submitter,
                    organisation=job.organisation,
                    dataset=compiled.dataset,
                    version=compiled.version,
                ),
                functools.partial(aggregate.compute, rt, compiled),
            )
        )
    try:
        released = charging.run(rt, charges)
    except VeilgateError as refused:
        for name, _compiled in plans:
            results[name] = {"status": "withheld", "reason": str(refused)}
        return results
    for (name, _compiled), (result, paid) in zip(plans, released, strict=True):
        results[name] = {"status": "released", "kind": "dp", **result, "replayed": not paid}
    return results


def _release(
    rt: Runtime, job: Job, results: dict[str, Json], *, outcome: sandbox_client.Outcome, reason: str | None,
    policy_version: str,
) -> Json:  # fmt: skip
    """Step 5: the signed document of the job's outcome, appended to the audit log."""
    spent = Amount(
        sum(
            micro_epsilon(str(r["epsilon"]))
            for r in results.values()
            if r.get("kind") == "dp" and r.get("status") == "released" and not r.get("replayed")
        ),
        0,
    ).epsilon
    event = AuditEvent(
        time=utc_now(),
        request_id=f"{job.id}-run",
        principal=job.submitter,
        organisation=job.organisation,
        method="RUN",
        route="/v1/jobs/{job_id}",
        decision=Decision.ALLOWED,
        status=200,
    )
    pending = prepare_release(
        rt,
        event,
        service=job.service,
        request={"job": job.id, "code_sha256": job.code_sha256, "datasets": job.datasets, "outputs": job.outputs},
        result={
            "job": job.id,
            "purpose": job.purpose,
            "grant": job.grant_id,
            "code_sha256": job.code_sha256,
            "isolation": outcome.isolation,
            "completed": reason is None,
            "reason": reason,
            "outputs": results,
        },
        dataset=job.datasets[0] if len(job.datasets) == 1 else None,
        policy_version=policy_version,
        privacy_spent=PrivacySpent(epsilon=spent),
        cost=Cost(epsilon=spent),
        grant=job.grant_id,
    )
    return release(rt, pending).body()


def view(job: Job, *, for_admin: bool) -> Json:
    """What the submitter sees (no reviewer names, no raw output), or everything for admins."""
    body: Json = {
        "id": job.id,
        "service": job.service,
        "purpose": job.purpose,
        "status": job.status,
        "code_sha256": job.code_sha256,
        "datasets": job.datasets,
        "outputs": job.outputs,
        "epsilon": job.epsilon,
        "reviews": [{"decision": r["decision"], "reason": r["reason"], "at": r["at"]} for r in job.reviews],
        "reason": job.reason,
        "result": job.result,
        "created": job.created,
        "updated": job.updated,
    }
    if for_admin:
        body |= {"submitter": job.submitter, "organisation": job.organisation, "code": job.code,
                 "code_kind": job.code_kind,
                 "reviews": job.reviews, "stdout": job.stdout, "stderr": job.stderr}  # fmt: skip
    return body


def require_owner(job: Job, principal: Principal) -> Job:
    if job.submitter != principal.client_id:
        raise NotFound(f"no job {job.id}")  # another's job does not exist for you
    return job


def run_local(
    bundle: PolicyBundle, service_name: str, entries: Sequence[CatalogEntry], code: str, outputs: list[str],
    *, epsilon: str | None = None, rows: int = 1000, work_dir: Path,
) -> Json:  # fmt: skip
    """The job on the synthetic sample of its datasets, with the same API and the same checks.

    The sample is made from the catalogue entries alone (no real value), so the run needs no
    isolation; DP outputs are planned and checked, not computed (there is no data to protect).
    """
    import pyarrow as pa  # noqa: PLC0415 - only local runs need it
    import pyarrow.parquet as pq  # noqa: PLC0415

    from gateway.domain.mock_rows import mock_rows  # noqa: PLC0415

    service = _service(bundle, service_name)

    arrow_types = {
        ColumnType.STRING: pa.string(),
        ColumnType.INTEGER: pa.int64(),
        ColumnType.FLOAT: pa.float64(),
        ColumnType.BOOLEAN: pa.bool_(),
        ColumnType.DATE: pa.date32(),
    }

    def write_inputs(target: Path) -> None:
        for entry in entries:
            # the same column types as the domain's export, so code that works here works there
            schema = pa.schema([(c.name, arrow_types[c.type]) for c in entry.columns])
            dates = {c.name for c in entry.columns if c.type is ColumnType.DATE}
            sample = [
                {k: date.fromisoformat(v) if k in dates and isinstance(v, str) else v for k, v in r.items()}
                for r in mock_rows(entry, rows, seed=1)
            ]
            pq.write_table(pa.Table.from_pylist(sample, schema=schema), target / f"{entry.dataset}.parquet")

    limits = service.limits
    outcome = sandbox_client.run(
        work_dir=work_dir,
        hide=[],
        files={"main.py": code.encode()},
        write_inputs=write_inputs,
        limits=sandbox_client.Limits(**limits.model_dump()),
        unsafe_run_without_isolation=True,
    )
    job = Job(
        id="local", submitter="local", organisation="local", service=service_name, purpose="local", grant_id="local",
        code=code, code_kind="file", code_sha256=hashlib.sha256(code.encode()).hexdigest(),
        datasets=[e.dataset for e in entries],
        outputs=outputs, epsilon=epsilon or (str(service.epsilon.default) if service.epsilon else None),
        status="local", reviews=[], created="", updated="", result=None, stdout=None, stderr=None, reason=None,
    )  # fmt: skip
    results = check_outputs(None, bundle, job, service=service, entries=entries, outcome=outcome)
    failed = outcome.timed_out or outcome.exit_code != 0
    return {
        "completed": not failed,
        "reason": _failure(outcome) if failed else None,
        "outputs": results,
        "stdout": outcome.stdout,
        "stderr": outcome.stderr,
    }
