"""The job store's port: submitted analysis code, its reviews, its state and its outcome.

Every change is one transaction that holds the job, so two processes reviewing, claiming or
finishing the same job cannot both take it on; a run's outcome is a compare and swap on the
job's state and attempt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

AWAITING_CHECK = "awaiting output check"


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    submitter: str
    organisation: str
    service: str
    purpose: str
    grant_id: str
    code: str
    """The Python file, or (code_kind `archive`) the zip archive in base64."""
    code_kind: str
    code_sha256: str
    datasets: list[str]
    outputs: list[str]
    epsilon: str | None
    status: str
    """planning (a DP job waiting for its plan run), planning-run, submitted, approved, rejected,
    running, finished, failed."""
    reviews: list[dict[str, Any]]
    created: str
    updated: str
    result: dict[str, Any] | None
    stdout: str | None
    stderr: str | None
    reason: str | None
    attempt: int = 0
    """How many runs (plan runs and real runs) were claimed: a run changes the job only while it
    is the latest, so an earlier run of a requeued job cannot overwrite it."""
    plan: list[dict[str, Any]] | None = None
    """A DP job's plan: the DP outputs its run on the synthetic sample asked for."""
    plan_sha256: str | None = None
    notes: list[str] | None = None
    """Why outputs were withheld, in detail: for reviewers only."""
    tables: list[dict[str, Any]] | None = None
    """An SDC job's declared tables (`gateway.domain.sdc.TableDeclaration.as_json`)."""
    held: dict[str, Any] | None = None
    """An SDC job's outputs after the automatic rules, held for output checking: only
    administrators see them until two checkers decided each (status `awaiting output check`)."""


class JobStore(Protocol):
    """Jobs from submission to outcome; `identity_of` maps a client id to the person behind it,
    so that two accounts of one person are one reviewer or checker."""

    def submit(self, **fields: Any) -> Job: ...

    def get(self, job_id: str) -> Job: ...

    def recent(self, *, submitter: str | None = None, limit: int = 100) -> list[Job]: ...

    def review(
        self,
        job_id: str,
        reviewer: str,
        decision: str,
        reason: str,
        needed: int,
        *,
        identity_of: Callable[[str], str] = str,
    ) -> Job: ...

    def requeue(
        self, job_id: str, by: str, reason: str, *, needed: int = 2, identity_of: Callable[[str], str] = str
    ) -> Job: ...

    def claim_run(self, job_id: str) -> Job: ...

    def claim_plan(self, job_id: str) -> Job: ...

    def claim_release(self, job_id: str) -> Job: ...

    def checked(self, *, before: datetime) -> list[Job]: ...

    def is_current(self, job: Job) -> bool: ...

    def finish(
        self, job: Job, *, status: str, result: dict[str, Any] | None, stdout: str, stderr: str, reason: str | None,
        notes: list[str] | None = None, plan: list[dict[str, Any]] | None = None, plan_sha256: str | None = None,
    ) -> Job: ...  # fmt: skip

    def hold(
        self, job: Job, *, held: dict[str, Any], stdout: str, stderr: str, reason: str | None, notes: list[str]
    ) -> Job: ...

    def check_output(
        self, job_id: str, checker: str, output: str, decision: str, reason: str,
        *, identity_of: Callable[[str], str] = str,
    ) -> tuple[Job, bool]: ...  # fmt: skip

    def fail_orphans(self) -> list[str]: ...

    def waiting(self, *, approved_before: datetime) -> list[Job]: ...

    def status_counts(self) -> dict[str, int]: ...

    def awaiting_check(self) -> list[Job]: ...

    def running(self) -> list[Job]: ...

    def fail_if_running(self, job_id: str, reason: str) -> bool: ...

    def code_of(self, job_id: str) -> tuple[str, str, str]: ...

    def close(self) -> None: ...
