"""The API a job uses, inside the sandbox and in `veilgate jobs run-local` alike.

    import veilgate_job as vg
    table = vg.dataset("social_insurance")            # a pyarrow Table, read-only
    vg.table("jobs_by_industry", rows, keys=["industry"], counts=["persons"])   # checked by SDC
    vg.dp("mean_wage", "mean", "social_insurance", column="wage_base", group_by=["industry"])

Outputs go only through these calls; they are written to the outputs file as JSON and
checked by the gateway before anything is released.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_inputs: Path | None = None
_outputs_file: Path | None = None
_outputs: dict[str, dict[str, Any]] = {}
MAX_ROWS = 10_000


def configure(inputs: Path, outputs_file: Path) -> None:
    global _inputs, _outputs_file  # one job per process
    _inputs, _outputs_file = inputs, outputs_file


def dataset(name: str) -> Any:
    """The dataset as a pyarrow Table (only the datasets the job declared are present)."""
    import pyarrow.parquet as pq  # noqa: PLC0415 - heavy, and only needed by jobs that read data

    if _inputs is None:
        raise RuntimeError("veilgate_job is not configured")
    path = _inputs / "data" / f"{name}.parquet"
    if not path.is_file():
        raise KeyError(f"dataset {name!r} was not declared by this job")
    return pq.read_table(path)


def table(name: str, rows: list[dict[str, Any]], *, keys: list[str], counts: list[str]) -> None:
    """A table of counts by public categories, released after statistical disclosure control.
    The gateway puts its rows in catalogue order and counts 0 for a combination not written."""
    if len(rows) > MAX_ROWS:
        raise ValueError(f"an output table has at most {MAX_ROWS} rows")
    _add(name, {"kind": "table", "keys": list(keys), "counts": list(counts), "rows": rows})


def dp(
    name: str,
    measure: str,
    dataset_name: str,
    *,
    column: str | None = None,
    group_by: list[str] | None = None,
    filters: dict[str, list[Any]] | None = None,
) -> None:
    """A statistic the gateway computes and releases under differential privacy (count, sum or
    mean), with the same mechanisms and ledger as aggregates; the job never sees its value. On a
    DP service the job runs on the synthetic sample only, and these calls make its plan."""
    _add(
        name,
        {
            "kind": "dp",
            "measure": measure,
            "dataset": dataset_name,
            "column": column,
            "group_by": list(group_by or []),
            "filters": dict(filters or {}),
        },
    )


def _add(name: str, output: dict[str, Any]) -> None:
    if name in _outputs:
        raise ValueError(f"output {name!r} is given twice")
    _outputs[name] = output


def finish() -> None:
    if _outputs_file is None:
        raise RuntimeError("veilgate_job is not configured")
    _outputs_file.write_text(json.dumps({"protocol": 1, "outputs": _outputs}, default=str))
