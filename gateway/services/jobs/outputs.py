"""Step 4 of a job on an SDC service: every declared output checked, released or withheld.

SECURITY: the researcher sees each declared output's status and a reason from the vocabulary;
undeclared outputs are dropped and never named back, and the checks' details (which may quote
what the job wrote) go to the reviewers' notes.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway import sandbox_client
from gateway.domain.catalog import CatalogEntry
from gateway.domain.job_vocabulary import Reason, Refusal
from gateway.domain.jobs import JobService, check_table, public_values
from gateway.domain.trail import Json
from gateway.jobs import Job


def check_outputs(
    job: Job, *, service: JobService, entries: Sequence[CatalogEntry], outcome: sandbox_client.Outcome
) -> tuple[dict[str, Json], list[str]]:
    """Every declared output, released or withheld (step 4); and the details for reviewers."""
    produced = outcome.outputs or {}
    public = public_values(entries)
    results: dict[str, Json] = {}
    notes: list[str] = []
    undeclared = set(produced) - set(job.outputs)
    if undeclared:
        notes.append(f"{len(undeclared)} undeclared output(s) dropped")
    if outcome.problem:
        notes.append(f"outputs file: {outcome.problem}")
    for name in job.outputs:
        output = produced.get(name)
        if not isinstance(output, dict):
            results[name] = Refusal(Reason.NOT_PRODUCED).shown()
        elif output.get("kind") != "table":
            results[name] = Refusal(Reason.NOT_THIS_KIND).shown()
        else:
            checked = check_table(output, public, service.sdc)
            if checked.released is not None:
                results[name] = {"status": "released", "kind": "table", "keys": output["keys"],
                                 "counts": output["counts"], "rows": checked.released}  # fmt: skip
            else:
                reason = (
                    Reason.NOT_PUBLIC_CATEGORY if "public category" in str(checked.reason) else Reason.OUTSIDE_RULES
                )
                results[name] = Refusal(reason).shown()
                notes.append(f"{name}: {checked.reason}")
    return results, notes
