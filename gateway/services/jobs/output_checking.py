"""Output checking for SDC job services, as the Five Safes and OpenSAFELY practise it.

Each declared table is either computed by the gateway on the data (a cross-tabulation: no
researcher code involved) or written by the job and checked against its declaration. Both then
pass the automatic rules (threshold, rounding, secondary suppression) and are *held*: two
output checkers (administrators, not the submitter, two different people) see the values, the
code and the log, and release or withhold each table. Only then is the signed, audited result
made and does the researcher see anything.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from gateway import sandbox_client
from gateway.domain import sdc
from gateway.domain.catalog import CatalogEntry
from gateway.domain.job_vocabulary import Reason, Refusal
from gateway.domain.jobs import JobService
from gateway.domain.principal import Principal
from gateway.domain.trail import Json
from gateway.errors import Conflict, InvalidRequest, PolicyDenied
from gateway.services import policy_admin
from gateway.services.jobs.authorization import StopNeeds, refuse_the_submitters_maker, stopped
from gateway.services.jobs.release import JobReleaseNeeds, release_document
from gateway.services.jobs.review import is_own, view
from gateway.services.jobs.stored import readable_files
from gateway.services.needs import HasClients, HasDomain, HasJobs
from gateway.state.ports import AWAITING_CHECK, Job


class OutputCheckingNeeds(StopNeeds, JobReleaseNeeds, HasClients, HasDomain, HasJobs, Protocol):
    """Output checks and the release of checked jobs."""


log = logging.getLogger("veilgate.jobs")


def declarations(job: Job) -> list[sdc.TableDeclaration]:
    """The tables a job declared at submission, as stored."""
    out = []
    for raw in job.tables or []:
        crosstab = raw.get("crosstab")
        out.append(
            sdc.TableDeclaration(
                raw["name"],
                tuple(raw["keys"]),
                tuple(raw["counts"]),
                None
                if crosstab is None
                else sdc.CrossTab(
                    crosstab["dataset"],
                    crosstab["count"],
                    tuple((f["column"], tuple(f["values"])) for f in crosstab["filters"]),
                ),
            )
        )
    return out


def crosstab_counts(
    rt: OutputCheckingNeeds, declaration: sdc.TableDeclaration, entries: Sequence[CatalogEntry]
) -> list[dict[str, Any]]:
    """The exact counts of a declared cross-tabulation, one row per key cell (zeros included),
    computed by the engine on the dataset's current version."""
    crosstab = declaration.crosstab
    if crosstab is None:  # unreachable: only cross-tabulations are computed
        raise ValueError("not a cross-tabulation")
    record = rt.catalog.get(crosstab.dataset)
    unit = record.entry.privacy_unit.column if crosstab.count == "units" else None
    with rt.domain.snapshot(crosstab.dataset, record.version) as snapshot:
        found = snapshot.cross_tab(declaration.keys, crosstab.filters, unit)
    (count,) = declaration.counts
    return [
        {**dict(zip(declaration.keys, cell, strict=True)), count: found.get(cell, 0)}
        for cell in sdc.cells(declaration, [record.entry])
    ]


def check_tables(
    rt: OutputCheckingNeeds | None,
    job: Job,
    *,
    service: JobService,
    entries: Sequence[CatalogEntry],
    outcome: sandbox_client.Outcome,
) -> dict[str, Json]:
    """Every declared table after the automatic rules: `held` for output checking (with its
    rows and whether the gateway computed or the job wrote it), or `withheld` with a reason from
    the vocabulary. Outputs the job produced but did not declare are never named.

    With `rt` None (a local run on the synthetic sample) cross-tabulations are not computed."""
    produced = outcome.outputs or {}
    results: dict[str, Json] = {}
    for declaration in declarations(job):
        shape = {"kind": "table", "keys": list(declaration.keys), "counts": list(declaration.counts)}
        if declaration.crosstab is not None:
            if declaration.name in produced:  # a computed table is never replaced by the job's
                results[declaration.name] = Refusal(sdc.SCHEMA_MISMATCH).shown()
                continue
            if rt is None:
                results[declaration.name] = {"status": "checked", "source": "computed", **shape}
                continue
            rows = crosstab_counts(rt, declaration, entries)
            source = "computed"
        else:
            if declaration.name not in produced:
                results[declaration.name] = Refusal(sdc.NOT_PRODUCED).shown()
                continue
            checked = sdc.check_written(produced[declaration.name], declaration, entries)
            if checked.rows is None:
                results[declaration.name] = Refusal(checked.reason or sdc.SCHEMA_MISMATCH).shown()
                continue
            rows, source = checked.rows, "written"
        released = sdc.apply_rules(rows, declaration.keys, declaration.counts, service.sdc)
        results[declaration.name] = {"status": "held", "source": source, **shape, "rows": released}
    return results


def checker_view(job: Job, *, with_code: bool) -> Json:
    """What output checkers see of a held job: every output with its values and source (computed
    by the gateway, or written by the job: nothing ties those to the data), the checks so far,
    and its code and log."""
    pending = sdc.pending_outputs(job.held)
    decided = sdc.output_decisions(pending, job.reviews)
    body: Json = {
        "id": job.id,
        "status": job.status,
        "service": job.service,
        "purpose": job.purpose,
        "declared": job.tables,
        "outputs": (job.held or {}).get("outputs"),
        # how the run ended, for the checkers only: the researcher reads whether it completed
        "run": (job.held or {}).get("reason") or "completed",
        "waiting": [name for name in pending if decided[name] is None],
        "checks": [r for r in job.reviews if "output" in r],
        "submitter": job.submitter,
        "code_sha256": job.code_sha256,
    }
    if with_code:
        body |= {"code": job.code, "code_kind": job.code_kind, "files": readable_files(job.code, job.code_kind),
                 "stdout": job.stdout, "stderr": job.stderr,
                 "reviews": [r for r in job.reviews if "output" not in r]}  # fmt: skip
    return body


def checker_queue(rt: OutputCheckingNeeds, who: Principal) -> list[Json]:
    """The jobs waiting for output checks, oldest first, without the checker's own."""
    return [checker_view(j, with_code=False) for j in rt.jobs.awaiting_check() if not is_own(rt, who, j)]


def checker_job(rt: OutputCheckingNeeds, who: Principal, job_id: str) -> Json:
    """One held job for a checker: not for the submitter's own person, who would read before
    the checkers what they hold back (PolicyDenied)."""
    job = rt.jobs.get(job_id)
    if is_own(rt, who, job):
        raise PolicyDenied("nobody reads the held outputs or the log of their own job: another output checker must")
    return checker_view(job, with_code=True)


def check_output(
    rt: OutputCheckingNeeds, checker: Principal, job_id: str, output: str, *, decision: str, reason: str
) -> Json:
    """One checker's decision on one held output, and the job as checkers then see it (still
    waiting) or as administrators see it (released)."""
    job = check(rt, checker, job_id, output, decision=decision, reason=reason)
    return checker_view(job, with_code=False) if job.status == AWAITING_CHECK else view(job, for_admin=True)


def check(rt: OutputCheckingNeeds, checker: Principal, job_id: str, output: str, *, decision: str, reason: str) -> Job:
    """One checker's decision on one held output; the decision that completes the checks makes
    the signed, audited result, with each held output released or withheld as decided."""
    if decision not in ("release", "withhold"):
        raise InvalidRequest("decision: release or withhold")
    refuse_the_submitters_maker(rt, rt.jobs.get(job_id), checker.client_id, "checks the outputs of")
    job, done = rt.jobs.check_output(
        job_id, checker.client_id, output, decision, reason, identity_of=rt.clients.identity_of
    )
    if not done:
        return job
    return release_checked(rt, rt.jobs.claim_release(job_id))


UNRELEASED_GRACE_SECONDS = 60
"""How long a job whose outputs are all decided may wait for the release its last check
started, before any process that shares the job store releases it."""


def release_unclaimed(rt: OutputCheckingNeeds, *, grace_seconds: float = UNRELEASED_GRACE_SECONDS) -> list[str]:
    """Release the checked jobs that no process releases: the process of the last check stopped
    first. At startup and every checkpoint interval; returns their ids."""
    released = []
    for job in rt.jobs.checked(before=datetime.now(UTC) - timedelta(seconds=grace_seconds)):
        try:
            release_checked(rt, rt.jobs.claim_release(job.id))
        except Conflict:  # another process took it
            continue
        released.append(job.id)
    return released


def release_checked(rt: OutputCheckingNeeds, job: Job) -> Job:
    """The signed result of a job whose held outputs are all decided, for the process that
    claimed its release (`JobStore.claim_release`). The freezes, the grant and the service are
    checked again first: if they stopped the job since its run, nothing is released."""
    why = stopped(rt, job)
    if why is not None:
        log.warning("job %s checked, but stopped before its release: %s", job.id, why.value)
        return rt.jobs.finish(job, status="failed", result=None, stdout=job.stdout or "", stderr=job.stderr or "",
                              reason=why.value, notes=job.notes)  # fmt: skip
    held = job.held or {}
    decided = sdc.output_decisions(sdc.pending_outputs(job.held), job.reviews, rt.clients.identity_of)
    results: dict[str, Json] = {}
    # SECURITY: which rule refused a table, and how the run ended, are the job's choice (a few
    # bits each, from the data), and the checkers cannot take them out of what they release:
    # the researcher reads one reason for every table not released, and whether the run completed.
    for name, result in (held.get("outputs") or {}).items():
        if decided.get(name) == "released":
            results[name] = {**result, "status": "released"}
        else:
            results[name] = Refusal(Reason.OUTPUT_CHECK).shown()
    reason = None if held.get("reason") is None else Reason.ERROR.value
    document = release_document(
        rt, job, results, isolation=str(held.get("isolation")), reason=reason,
        policy_version=policy_admin.current(rt).version,
    )  # fmt: skip
    status = (
        "failed" if reason is not None and not any(r["status"] == "released" for r in results.values()) else "finished"
    )
    return rt.jobs.finish(
        job, status=status, result=document, stdout=job.stdout or "", stderr=job.stderr or "", reason=reason,
        notes=job.notes,
    )  # fmt: skip
