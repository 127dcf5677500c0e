"""Approved analysis code: a submitted `Job`, waiting for it, its outputs as tables, local runs."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from veilgate_client.errors import BadResponse
from veilgate_client.results import frame, table_rows

if TYPE_CHECKING:
    from veilgate_client.client import Gateway
    from veilgate_client.receipt import Receipt

DONE = frozenset({"finished", "failed", "rejected"})
"""Statuses after which a job changes no more; any other (planning, submitted, approved, running,
awaiting output checks) is followed by `wait`."""


class Job:
    """A job as the gateway last showed it: `id`, `status`, `reviews`, `reason`, and once it ran,
    its signed result (checked when read: `receipt`)."""

    def __init__(self, gateway: Gateway, view: dict[str, Any]) -> None:
        self.gateway = gateway
        self.view = _checked_view(view)
        self._receipt: Receipt | None = None

    id = property(lambda self: str(self.view["id"]))
    status = property(lambda self: str(self.view["status"]))
    reason = property(lambda self: self.view.get("reason"))
    code_sha256 = property(lambda self: str(self.view["code_sha256"]))

    @property
    def done(self) -> bool:
        return self.status in DONE

    @property
    def receipt(self) -> Receipt | None:
        """The checked receipt of the run's result, once the job ran."""
        if self._receipt is None and isinstance(self.view.get("result"), dict):
            self._receipt = self.gateway.receipt_of(self.view["result"])
        return self._receipt

    @property
    def result(self) -> dict[str, Any] | None:
        receipt = self.receipt
        return None if receipt is None else dict(receipt.result)

    def outputs(self) -> dict[str, Any]:
        """Each released output as a pandas DataFrame (withheld ones are left out: see `withheld()`)."""
        return {name: _output_frame(out) for name, out in self._outputs().items() if out.get("status") == "released"}

    def withheld(self) -> dict[str, str]:
        """The outputs that were withheld, with the reason to act on."""
        outputs = self._outputs().items()
        return {name: str(out.get("reason")) for name, out in outputs if out.get("status") != "released"}

    def _outputs(self) -> dict[str, dict[str, Any]]:
        result = self.result
        if result is None:
            raise ValueError(f"job {self.id} has not run (status {self.status})")
        return dict(result.get("outputs") or {})

    def refresh(self) -> Job:
        self.view = _checked_view(self.gateway.get_json(f"/v1/jobs/{self.id}"))
        self._receipt = None
        return self

    def __repr__(self) -> str:
        return f"Job({self.id!r}, status={self.status!r})"


def _checked_view(view: Any) -> dict[str, Any]:
    if not isinstance(view, dict) or not isinstance(view.get("id"), str) or not isinstance(view.get("status"), str):
        raise BadResponse("the gateway's view of a job has no id and status")
    return view


def _output_frame(output: dict[str, Any]) -> Any:
    if output.get("kind") == "dp":
        return frame(table_rows(output.get("rows") or []))
    return frame([dict(row) for row in output.get("rows") or []])


def _print_progress(job: Job) -> None:
    reviews = len(job.view.get("reviews") or [])
    print(f"job {job.id}: {job.status}" + (f" ({reviews} review(s))" if reviews else ""), file=sys.stderr)


def wait(gateway: Gateway, job_id: str, *, timeout: float, poll: float, progress: Callable[[Job], None] | bool) -> Job:
    """Poll until the job is done; TimeoutError after `timeout` seconds (the job keeps going)."""
    report = _print_progress if progress is True else (progress or None)
    deadline, last = time.monotonic() + timeout, None
    while True:
        job = gateway.job(job_id)
        if report is not None and job.status != last:
            report(job)
            last = job.status
        if job.done:
            return job
        if time.monotonic() >= deadline:
            raise TimeoutError(f"job {job_id} is still {job.status} after {timeout:g} s")
        time.sleep(poll)


@dataclass(frozen=True)
class LocalRun:
    """The outcome of a local run on the synthetic sample, in the shape the gateway releases it."""

    completed: bool
    reason: str | None
    outputs: dict[str, dict[str, Any]]
    stdout: str
    stderr: str

    def tables(self) -> dict[str, Any]:
        """The outputs that carry rows (released, or held for output checking), as DataFrames."""
        return {n: _output_frame(o) for n, o in self.outputs.items() if o.get("rows") is not None}


def run_local(
    code: str | Path,
    *,
    service: str,
    datasets: Sequence[str],
    outputs: Sequence[str],
    tables: str | Path | None,
    config: str | Path | None,
    rows: int,
    run: Callable[..., Any],
    veilgate: str,
) -> LocalRun:
    """`veilgate jobs run-local`, whose JSON outcome becomes a LocalRun (RuntimeError if it fails)."""
    command = [veilgate, "jobs", "run-local", str(code), "--service", service, "--rows", str(rows)]
    command += [a for d in datasets for a in ("--dataset", d)] + [a for o in outputs for a in ("--output", o)]
    if tables is not None:
        command += ["--tables", str(tables)]
    if config is not None:
        command += ["--config", str(config)]
    done = run(command, capture_output=True, text=True, check=False)
    try:
        outcome = json.loads(done.stdout)
    except ValueError:
        message = (done.stderr or done.stdout).strip().splitlines()
        raise RuntimeError(f"veilgate jobs run-local failed: {message[-1] if message else done.returncode}") from None
    return LocalRun(bool(outcome["completed"]), outcome.get("reason"), dict(outcome["outputs"]),
                    str(outcome.get("stdout") or ""), str(outcome.get("stderr") or ""))  # fmt: skip
