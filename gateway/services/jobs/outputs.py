"""Step 4 of a job on an SDC service: every declared table checked, then held for output checking.

SECURITY: the researcher sees each declared output's status and a reason from the vocabulary;
undeclared outputs are dropped and never named back, and the checks' details go to the
reviewers' notes. Tables that pass the automatic rules are held (`output_checking`): nothing is
released before two output checkers decide.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway import sandbox_client
from gateway.domain.catalog import CatalogEntry
from gateway.domain.jobs import JobService
from gateway.domain.trail import Json
from gateway.services.jobs import output_checking
from gateway.services.jobs.output_checking import OutputCheckingNeeds
from gateway.state.ports import Job


def check_outputs(
    rt: OutputCheckingNeeds | None,
    job: Job,
    *,
    service: JobService,
    entries: Sequence[CatalogEntry],
    outcome: sandbox_client.Outcome,
) -> tuple[dict[str, Json], list[str]]:
    """Every declared table, held or withheld (step 4); and the details for reviewers. With `rt`
    None (a local run on the synthetic sample), cross-tabulations are planned, not computed."""
    results = output_checking.check_tables(rt, job, service=service, entries=entries, outcome=outcome)
    notes: list[str] = []
    undeclared = set(outcome.outputs or {}) - set(job.outputs)
    if undeclared:
        notes.append(f"{len(undeclared)} undeclared output(s) dropped")
    if outcome.problem:
        notes.append(f"outputs file: {outcome.problem}")
    return results, notes
