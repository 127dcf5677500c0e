"""Jobs from the client: a local run on the synthetic sample, with the gateway's output checks."""

from __future__ import annotations

from veilgate_client import Gateway

from tests.client.conftest import Served
from tests.conftest import REPO

EXAMPLE = REPO / "sandbox" / "examples" / "enterprises_by_status.py"
TABLES = REPO / "sandbox" / "examples" / "enterprises_by_status.tables.json"


def test_a_local_run_gives_the_checked_tables_of_the_synthetic_sample(served: Served) -> None:
    run = Gateway.run_local(EXAMPLE, service="enterprise-tables", datasets=["enterprise_registry"], tables=TABLES,
                            config=served.root / "veilgate.toml", rows=400)  # fmt: skip
    assert run.completed and set(run.outputs) == {"enterprises_by_status", "active_by_province"}
    table = run.tables()["active_by_province"]
    assert list(table.columns) == ["province", "enterprises"] and len(table) > 0
