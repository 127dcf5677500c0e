"""The bank's batch verification example runs against a served gateway and keeps its receipts."""

from __future__ import annotations

import csv
import json
import runpy
from pathlib import Path

import pytest
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


def test_the_researcher_notebook_runs_headless_and_saves_its_plot(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nbclient
    import nbformat

    monkeypatch.setenv("VEILGATE_URL", served.base)
    monkeypatch.setenv("VEILGATE_CLIENT_ID", "demo-researcher")
    monkeypatch.setenv("VEILGATE_CLIENT_SECRET", served.credentials["demo-researcher"])
    monkeypatch.setenv("VEILGATE_PIN_FILE", str(tmp_path / "pin.json"))
    monkeypatch.setenv("VEILGATE_PLOT_PATH", str(tmp_path / "plot.png"))
    notebook = nbformat.read(REPO / "examples" / "researcher.ipynb", as_version=4)
    nbclient.NotebookClient(notebook, timeout=180, resources={"metadata": {"path": str(tmp_path)}}).execute()
    png = (tmp_path / "plot.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    printed = "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))
    assert "parameters.group_by" in printed and "leaf " in printed
    Receipt.load(tmp_path / "wage-base-mean.receipt.json", jwks=json.loads((tmp_path / "pin.json").read_text()))
