"""The synthetic sample a job meets in its plan run and in `veilgate jobs run-local`.

SECURITY: made from catalogue entries alone (`mock_rows`), never from a record: what a job does
with it says nothing about the real data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from gateway.domain.catalog import CatalogEntry, ColumnType
from gateway.domain.mock_rows import mock_rows

SAMPLE_ROWS = 1000
_ARROW_TYPES = {
    ColumnType.STRING: pa.string(),
    ColumnType.INTEGER: pa.int64(),
    ColumnType.FLOAT: pa.float64(),
    ColumnType.BOOLEAN: pa.bool_(),
    ColumnType.DATE: pa.date32(),
}


def sample_inputs(entries: Sequence[CatalogEntry], rows: int = SAMPLE_ROWS) -> Callable[[Path], None]:
    """What writes the sample of each dataset where the sandbox reads its inputs."""

    def write_inputs(target: Path) -> None:
        for entry in entries:
            # the same column types as the domain's export, so code that works here works there
            schema = pa.schema([(c.name, _ARROW_TYPES[c.type]) for c in entry.columns])
            dates = {c.name for c in entry.columns if c.type is ColumnType.DATE}
            sample = [
                {k: date.fromisoformat(v) if k in dates and isinstance(v, str) else v for k, v in r.items()}
                for r in mock_rows(entry, rows, seed=1)
            ]
            pq.write_table(pa.Table.from_pylist(sample, schema=schema), target / f"{entry.dataset}.parquet")

    return write_inputs
