"""The job store's rules, written once against its table with `?` placeholders, for both
backends (`jobs_sqlite`, `jobs_postgres`), and its schema steps.

Invariants: every change is one transaction that holds the job (SQLite: the file's write lock;
PostgreSQL: its row), so two processes reviewing the same job cannot both take it past its last
review; a run's outcome is recorded only while that run still holds the job (compare and swap on
its state and attempt); a job's code is stored with its SHA-256 at submission, and the hash is
what reviewers approve.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from gateway.domain.sdc import current_checks, output_decisions, pending_outputs
from gateway.errors import Conflict, NotFound
from gateway.state.jobs_schema import INSERT, SELECT, SELECT_ONE
from gateway.state.migrations import Execute
from gateway.state.ports.jobs import AWAITING_CHECK, Job

__all__ = ["JobRules", "runner_id"]

_RUNNING = ("running", "planning-run", "releasing")
"""The states of a job some process holds: its real run, its plan run on the synthetic sample, or
the release of its checked outputs."""

Writing = Callable[[], AbstractContextManager[Execute]]
Rows = Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]


def runner_id() -> str:
    """This process, as the runner of a job: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _job(row: tuple[Any, ...]) -> Job:
    values = list(row)
    for i in (9, 10, 13):
        values[i] = json.loads(values[i])
    for i in (16, 21, 23, 24, 25):
        values[i] = json.loads(values[i]) if values[i] is not None else None
    return Job(*values)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class JobRules:
    """The operations of `ports.JobStore`, whichever database holds the jobs. A backend hands
    them `writing` (a transaction that holds what it reads until it commits), `rows` (a read
    outside any change) and `select_for_update` (the statement that reads one job and holds it)."""

    def __init__(self, *, writing: Writing, rows: Rows, select_for_update: str = SELECT_ONE) -> None:
        self._transaction = writing
        self._rows = rows
        self._select_for_update = select_for_update

    def _held(self, execute: Execute, job_id: str) -> Job:
        """The job, read inside a change and held until it commits."""
        row = execute(self._select_for_update, (job_id,)).fetchone()
        if row is None:
            raise NotFound("job: no job of yours has this id")
        return _job(row)

    def submit(self, **fields: Any) -> Job:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        job_id = "job-" + secrets.token_hex(8)
        with self._transaction() as execute:
            execute(
                INSERT,
                (
                    job_id, fields["submitter"], fields["organisation"], fields["service"], fields["purpose"],
                    fields["grant_id"], fields["code"], fields["code_kind"], fields["code_sha256"],
                    json.dumps(fields["datasets"]),
                    json.dumps(fields["outputs"]), fields["epsilon"], fields.get("status", "submitted"), "[]", now, now,
                    None, None, None, None, 0, None, None, None,
                    json.dumps(fields["tables"]) if fields.get("tables") else None, None,
                ),
            )  # fmt: skip
        return self.get(job_id)

    def get(self, job_id: str) -> Job:
        rows = self._rows(SELECT_ONE, (job_id,))
        if not rows:
            raise NotFound("job: no job of yours has this id")
        return _job(rows[0])

    def recent(self, *, submitter: str | None = None, limit: int = 100) -> list[Job]:
        sql = SELECT
        params: tuple[Any, ...] = ()
        if submitter is not None:
            sql += " WHERE submitter = ?"
            params = (submitter,)
        rows = self._rows(sql + " ORDER BY created DESC LIMIT ?", (*params, limit))
        return [_job(r) for r in rows]

    def review(
        self,
        job_id: str,
        reviewer: str,
        decision: str,
        reason: str,
        needed: int,
        *,
        identity_of: Callable[[str], str] = str,
    ) -> Job:
        """Record one review; the job is approved when `needed` different reviewers approved it.
        `identity_of` maps a client id to the person behind it (the accounts'), so that two
        accounts of one person are one reviewer, and a submitter's second account none."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._transaction() as execute:
            job = self._held(execute, job_id)
            if job.status != "submitted":
                raise Conflict(f"job {job_id} is {job.status}: it takes no more reviews")
            identity = identity_of(reviewer)
            if identity_of(job.submitter) == identity:
                raise Conflict("nobody reviews their own job")
            if any(identity_of(r["reviewer"]) == identity for r in job.reviews):
                raise Conflict("you have reviewed this job already: another administrator must review it")
            reviews = [*job.reviews, {"reviewer": reviewer, "decision": decision, "reason": reason,
                                      "code_sha256": job.code_sha256, "plan_sha256": job.plan_sha256,
                                      "at": now}]  # fmt: skip
            approvals = sum(r["decision"] == "approve" for r in reviews)
            status = "rejected" if decision == "reject" else ("approved" if approvals >= needed else "submitted")
            execute(
                "UPDATE jobs SET reviews = ?, status = ?, updated = ?, reason = ? WHERE id = ?",
                (json.dumps(reviews), status, now, reason if decision == "reject" else None, job_id),
            )
        return self.get(job_id)

    def requeue(
        self, job_id: str, by: str, reason: str, *, needed: int = 2, identity_of: Callable[[str], str] = str
    ) -> Job:
        """failed -> approved, for a job that released nothing (its process stopped, say), once
        administrators of `needed` identities asked for it, none of them the submitter's: it runs
        again under its approvals, and the run checks everything again. A request short of that
        is recorded (`requeue-request`) and the job stays failed. Recorded with the reviews."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._transaction() as execute:
            job = self._held(execute, job_id)
            if job.status != "failed" or job.result is not None:
                raise Conflict(f"job {job_id} is {job.status}: only a failed job that released nothing runs again")
            identity = identity_of(by)
            if identity_of(job.submitter) == identity:
                raise Conflict("nobody requeues their own job")
            last = max((i for i, r in enumerate(job.reviews) if r["decision"] == "requeue"), default=-1)
            asked = {identity_of(r["reviewer"]) for r in job.reviews[last + 1 :] if r["decision"] == "requeue-request"}
            if identity in asked:
                raise Conflict("you asked already: another administrator must ask for this job to run again")
            done = len(asked) + 1 >= needed
            reviews = [*job.reviews, {"reviewer": by, "decision": "requeue" if done else "requeue-request",
                                      "reason": reason, "code_sha256": job.code_sha256,
                                      "plan_sha256": job.plan_sha256, "at": now}]  # fmt: skip
            if done:
                execute(
                    "UPDATE jobs SET reviews = ?, status = 'approved', updated = ?, reason = NULL, stdout = NULL, "
                    "stderr = NULL WHERE id = ?",
                    (json.dumps(reviews), now, job_id),
                )
            else:
                execute("UPDATE jobs SET reviews = ?, updated = ? WHERE id = ?", (json.dumps(reviews), now, job_id))
        return self.get(job_id)

    def claim_run(self, job_id: str) -> Job:
        """approved -> running, once: only one process runs a job. The claim is a new attempt."""
        return self._claim(job_id, "approved", "running")

    def claim_plan(self, job_id: str) -> Job:
        """planning -> planning-run, once: the plan run of a DP job on the synthetic sample."""
        return self._claim(job_id, "planning", "planning-run")

    def claim_release(self, job_id: str) -> Job:
        """checked -> releasing, once: only one process makes the signed result of a job whose held
        outputs are all decided (the one whose check completed them, or any after it stopped)."""
        return self._claim(job_id, "checked", "releasing")

    def checked(self, *, before: datetime) -> list[Job]:
        """Jobs whose outputs were all decided before then and that no process is releasing."""
        stamp = before.astimezone(UTC).isoformat(timespec="seconds")
        return [_job(r) for r in self._rows(SELECT + " WHERE status = 'checked' AND updated <= ? ORDER BY updated",
                                            (stamp,))]  # fmt: skip

    def _claim(self, job_id: str, waiting: str, held: str) -> Job:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._transaction() as execute:
            updated = execute(
                "UPDATE jobs SET status = ?, updated = ?, runner = ?, attempt = attempt + 1 "
                "WHERE id = ? AND status = ?",
                (held, now, runner_id(), job_id, waiting),
            ).rowcount
        if updated != 1:
            raise Conflict(f"job {job_id} is not waiting to run")
        return self.get(job_id)

    def is_current(self, job: Job) -> bool:
        """The run that claimed `job` still holds it: nothing failed, requeued or claimed it since."""
        rows = self._rows("SELECT status, attempt FROM jobs WHERE id = ?", (job.id,))
        return bool(rows) and (rows[0][0], rows[0][1]) == (job.status, job.attempt)

    def finish(
        self, job: Job, *, status: str, result: dict[str, Any] | None, stdout: str, stderr: str, reason: str | None,
        notes: list[str] | None = None, plan: list[dict[str, Any]] | None = None, plan_sha256: str | None = None,
    ) -> Job:  # fmt: skip
        """The outcome of the run that claimed `job` (as `claim_run` or `claim_plan` returned it),
        recorded only if that run still holds the job (compare and swap on its state and attempt);
        else Conflict, and nothing changes: a job failed and requeued meanwhile is not overwritten."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._transaction() as execute:
            updated = execute(
                "UPDATE jobs SET status = ?, result = ?, stdout = ?, stderr = ?, reason = ?, updated = ?, notes = ?, "
                "plan = COALESCE(?, plan), plan_sha256 = COALESCE(?, plan_sha256) "
                "WHERE id = ? AND status = ? AND attempt = ?",
                (
                    status, None if result is None else json.dumps(result), stdout, stderr, reason, now,
                    None if notes is None else json.dumps(notes), None if plan is None else json.dumps(plan),
                    plan_sha256, job.id, job.status, job.attempt,
                ),
            ).rowcount  # fmt: skip
        if updated != 1:
            raise Conflict(f"job {job.id} is no longer held by this run; its outcome was not recorded")
        return self.get(job.id)

    def hold(
        self, job: Job, *, held: dict[str, Any], stdout: str, stderr: str, reason: str | None, notes: list[str]
    ) -> Job:
        """running -> awaiting output check, for the run that claimed `job` (compare and swap, as
        `finish`): the outputs after the automatic rules wait for two output checkers; nothing is
        released, and the submitter sees none of it."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._transaction() as execute:
            changed = execute(
                "UPDATE jobs SET status = ?, held = ?, stdout = ?, stderr = ?, reason = ?, notes = ?, updated = ? "
                "WHERE id = ? AND status = ? AND attempt = ?",
                (
                    AWAITING_CHECK,
                    json.dumps(held),
                    stdout,
                    stderr,
                    reason,
                    json.dumps(notes),
                    now,
                    job.id,
                    job.status,
                    job.attempt,
                ),
            ).rowcount
        if changed != 1:
            raise Conflict(f"job {job.id} is no longer held by this run; its outcome was not recorded")
        return self.get(job.id)

    def check_output(
        self, job_id: str, checker: str, output: str, decision: str, reason: str,
        *, identity_of: Callable[[str], str] = str,
    ) -> tuple[Job, bool]:  # fmt: skip
        """One output checker's decision (`release` or `withhold`) on one held output, recorded with
        the reviews. Nobody checks their own job's outputs, nor one output twice. True for the one
        decision that leaves every held output decided (the job is then `checked`, to be released)."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._transaction() as execute:
            job = self._held(execute, job_id)
            if job.status != AWAITING_CHECK:
                raise Conflict(f"job {job_id} is {job.status}: it has no outputs waiting for a check")
            if identity_of(job.submitter) == identity_of(checker):
                raise Conflict("nobody checks the outputs of their own job")
            if output not in pending_outputs(job.held):
                raise NotFound("no held output of that name: see the job's held outputs")
            if any(
                r.get("output") == output and identity_of(r["reviewer"]) == identity_of(checker)
                for r in current_checks(job.reviews)
            ):
                raise Conflict("you have checked this output already: another output checker must")
            reviews = [*job.reviews, {"reviewer": checker, "decision": decision, "output": output, "reason": reason,
                                      "code_sha256": job.code_sha256, "at": now}]  # fmt: skip
            done = all(
                v is not None for v in output_decisions(pending_outputs(job.held), reviews, identity_of).values()
            )
            execute(
                "UPDATE jobs SET reviews = ?, status = ?, updated = ? WHERE id = ?",
                (json.dumps(reviews), "checked" if done else AWAITING_CHECK, now, job_id),
            )
        return self.get(job_id), done

    def fail_orphans(self) -> list[str]:
        """Jobs left running by a process of this host that is gone (a crash or a stop during the
        run): a real run is marked failed, so nobody waits for it forever; a plan run (on the
        synthetic sample, nothing released) waits to run again, and so does the release of checked
        outputs (the researcher saw nothing yet). Returns their ids."""
        host = socket.gethostname()
        now = datetime.now(UTC).isoformat(timespec="seconds")
        orphans: list[tuple[str, str, int]] = []
        with self._transaction() as execute:
            for job_id, runner, status, attempt in execute(
                "SELECT id, runner, status, attempt FROM jobs WHERE status IN (?, ?, ?)", _RUNNING
            ).fetchall():
                name, _, pid = str(runner or "").rpartition(":")
                if name == host and pid.isdigit() and not _alive(int(pid)):
                    orphans.append((str(job_id), str(status), int(attempt)))
            for job_id, status, attempt in orphans:
                if status == "releasing":  # the run's own reason stays
                    execute(
                        "UPDATE jobs SET status = 'checked', updated = ? WHERE id = ? AND status = ? AND attempt = ?",
                        (now, job_id, status, attempt),
                    )
                    continue
                after, reason = (
                    ("planning", None) if status == "planning-run" else ("failed", "failed: process stopped")
                )
                execute(
                    "UPDATE jobs SET status = ?, updated = ?, reason = ? WHERE id = ? AND status = ? AND attempt = ?",
                    (after, now, reason, job_id, status, attempt),
                )
        return [job_id for job_id, _status, _attempt in orphans]

    def waiting(self, *, approved_before: datetime) -> list[Job]:
        """Jobs approved (or waiting for their plan run) before then that no process has claimed."""
        stamp = approved_before.astimezone(UTC).isoformat(timespec="seconds")
        return [_job(r) for r in self._rows(
            SELECT + " WHERE status IN ('approved', 'planning') AND updated <= ? ORDER BY updated", (stamp,)
        )]  # fmt: skip

    def status_counts(self) -> dict[str, int]:
        """How many jobs are in each status (the metrics' job states)."""
        return {str(s): int(n) for s, n in self._rows("SELECT status, COUNT(*) FROM jobs GROUP BY status", ())}

    def awaiting_check(self) -> list[Job]:
        """Jobs whose outputs wait for output checkers, oldest first."""
        return [_job(r) for r in self._rows(SELECT + " WHERE status = ? ORDER BY updated", (AWAITING_CHECK,))]

    def running(self) -> list[Job]:
        """Every job some process is running now (its real run, its plan run or its release), or was
        when it stopped."""
        return [_job(r) for r in self._rows(SELECT + " WHERE status IN (?, ?, ?) ORDER BY updated", _RUNNING)]

    def fail_if_running(self, job_id: str, reason: str) -> bool:
        """running -> failed, with `reason` (a plan run, which released nothing, waits to run
        again instead, and so does the release of checked outputs, keeping its run's reason);
        False if the job was not running (it just finished)."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._transaction() as execute:
            changed = execute(
                "UPDATE jobs SET status = CASE status WHEN 'planning-run' THEN 'planning' "
                "WHEN 'releasing' THEN 'checked' ELSE 'failed' END, updated = ?, "
                "reason = CASE status WHEN 'planning-run' THEN NULL WHEN 'releasing' THEN reason ELSE ? END "
                "WHERE id = ? AND status IN (?, ?, ?)",
                (now, reason, job_id, *_RUNNING),
            ).rowcount
        return bool(changed == 1)

    def code_of(self, job_id: str) -> tuple[str, str, str]:
        """(code, its kind, the hash recorded at submission), read afresh for the run."""
        rows = self._rows("SELECT code, code_kind, code_sha256 FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise NotFound("job: no job of yours has this id")
        return str(rows[0][0]), str(rows[0][1]), str(rows[0][2])
