"""The bank's batch verification example runs against a served gateway and keeps its receipts."""

from __future__ import annotations

import csv
import json
import runpy
from pathlib import Path

from veilgate_client import Receipt

from tests.client.conftest import Served
from tests.conftest import REPO


def test_the_bank_script_verifies_in_batches_and_keeps_verifiable_receipts(served: Served, tmp_path: Path) -> None:
    script = runpy.run_path(str(REPO / "examples" / "bank_batch_verification.py"))
    applicants = [served.active_enterprise(i) for i in range(3, 6)]
    applicants[1] = {**applicants[1], "legal_representative": "not the representative"}
    with served.gateway("demo-business") as gw:
        lines = script["run"](gw, applicants, tmp_path / "evidence", wait=10)
        jwks = gw.jwks()
    assert [line["result"] for line in lines] == ["match", "no_match", "match"]
    with (tmp_path / "evidence" / "results.csv").open() as handle:
        assert list(csv.DictReader(handle)) == lines
    (kept,) = (tmp_path / "evidence").glob("receipt-*.json")
    receipt = Receipt.load(kept, jwks=jwks)  # signature and inclusion proof re-checked offline
    assert receipt.inclusion is not None and json.loads(kept.read_text())["gateway"] == served.base
