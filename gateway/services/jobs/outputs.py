"""Step 4 of a job: every declared output checked, released or withheld with a reason."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from gateway import sandbox_client
from gateway.domain.aggregate import AggregateTemplate, FilterRule, epsilon_text, plan
from gateway.domain.budget import micro_epsilon
from gateway.domain.catalog import CatalogEntry
from gateway.domain.jobs import JobService, check_table, public_values
from gateway.domain.policy import PolicyBundle
from gateway.domain.trail import Json
from gateway.errors import InvalidRequest, VeilgateError
from gateway.jobs import Job
from gateway.services import aggregate, charging
from gateway.services.runtime import Runtime


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
