"""`veilgate jobs run-local`: a job on the synthetic sample of its datasets, with the same API and
the same checks as a real run, and no real value anywhere near it."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from gateway import sandbox_client
from gateway.domain.catalog import CatalogEntry, ColumnType
from gateway.domain.policy import PolicyBundle
from gateway.domain.trail import Json
from gateway.jobs import Job
from gateway.services.jobs.outputs import check_outputs
from gateway.services.jobs.run import failure
from gateway.services.jobs.submission import service_of


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

    service = service_of(bundle, service_name)

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
        "reason": failure(outcome) if failed else None,
        "outputs": results,
        "stdout": outcome.stdout,
        "stderr": outcome.stderr,
    }
