"""Factories for aggregate tests: a small hostile dataset with a canary, and researcher clients."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from gateway.catalog import CatalogStore
from gateway.services import registration
from tests.conftest import CANARY, Installation, bearer, get_token

PURPOSE = "public_research"
PAYROLL_ENTRY = """\
dataset: payroll
registration_code: "PDR-TEST-0001"
title: Test payroll
owner_body: Test body
source_system: Test system
classification: {domain: test, category: payroll}
level: important
privacy_unit: {column: person, max_rows: 3}
columns:
  - {name: person, type: string, sensitivity: identifier}
  - {name: note, type: string, sensitivity: personal, nullable: true}
  - {name: region, type: string, sensitivity: public, categories: [north, south, east, west]}
  - {name: city, type: string, sensitivity: public}
  - {name: amount, type: float, sensitivity: personal, bounds: [0, 100], nullable: true}
  - {name: score, type: integer, sensitivity: personal, bounds: [-50, 50]}
"""
HOSTILE_ROWS = 5000
"""Rows the canary person has in the source; registration keeps `max_rows` of them."""


def payroll_rows() -> list[dict[str, Any]]:
    """20 ordinary persons with 1-3 rows each, and one with thousands of rows carrying the canary."""
    rows: list[dict[str, Any]] = []
    regions = ["north", "south", "east"]  # nobody lives in the west: an empty cell
    for p in range(20):
        for r in range(1 + p % 3):
            rows.append(
                {
                    "person": f"P{p:03d}",
                    "note": None,
                    "region": regions[p % 3],
                    "city": "Springfield",
                    "amount": float(10 + p + r) if p != 7 else None,
                    "score": (p * 7 + r) % 101 - 50,
                }
            )
    for r in range(HOSTILE_ROWS):
        rows.append(
            {"person": CANARY, "note": CANARY, "region": "north", "city": CANARY, "amount": 100.0, "score": 50 - r % 2}
        )
    return rows


def payroll_templates(bundle: dict[str, Any]) -> None:
    """Templates over the payroll dataset for every measure, granted to the demo researcher."""
    common = {"dataset": "payroll", "group_by": ["region"], "epsilon": {"default": "1", "max": "5"}}
    bundle["aggregate_templates"].update(
        {
            "payroll-count": {"title": "Rows", "measure": "count", **common},
            "payroll-persons": {"title": "Persons", "measure": "count_units", **common},
            "payroll-sum": {"title": "Sum", "measure": "sum", "column": "amount", "granularity": "0.5", **common},
            "payroll-mean": {"title": "Mean", "measure": "mean", "column": "score", **common},
            "payroll-histogram": {
                "title": "Histogram",
                "measure": "histogram",
                "column": "amount",
                "bins": [0, 25, 50, 75, 100],
                **common,
            },
            "payroll-median": {
                "title": "Median",
                "measure": "quantile",
                "column": "amount",
                "bins": [0, 10, 20, 30, 40, 50, 100],
                "quantiles": ["0.5"],
                **common,
            },
        }
    )
    bundle["aggregate_templates"]["payroll-by-city"] = {
        "title": "Rows by city",
        "measure": "count",
        "dataset": "payroll",
        "group_by": ["city"],
        "key_selection": {"delta": "0.000001"},
        "epsilon": {"default": "5", "max": "5"},
    }
    bundle["dataset_budgets"]["payroll"] = {"epsilon": "100", "delta": "0.001"}
    bundle["grants"]["labour-research-2026"]["services"] += [
        "payroll-count",
        "payroll-persons",
        "payroll-sum",
        "payroll-mean",
        "payroll-histogram",
        "payroll-median",
        "payroll-by-city",
    ]


def register_payroll(inst: Installation, rows: list[dict[str, Any]] | None = None) -> None:
    entry = inst.root / "payroll.yaml"
    entry.write_text(PAYROLL_ENTRY)
    source = inst.root / "payroll.parquet"
    schema = pa.schema(
        [("person", pa.string()), ("note", pa.string()), ("region", pa.string()), ("city", pa.string()),
         ("amount", pa.float64()), ("score", pa.int64())]
    )  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows or payroll_rows(), schema=schema), source)
    registration.register(CatalogStore(inst.settings.data_path), inst.settings.data_path, entry, source)


@dataclass
class Research:
    client: TestClient
    headers: dict[str, str]
    installation: Installation

    def release(self, template: str, *, headers: dict[str, str] | None = None, **body: Any) -> Any:
        return self.client.post(
            f"/v1/aggregate/{template}", json={"purpose": PURPOSE, **body}, headers={**self.headers, **(headers or {})}
        )

    def preview(self, template: str, **body: Any) -> Any:
        return self.client.post(
            f"/v1/aggregate/{template}/preview", json={"purpose": PURPOSE, **body}, headers=self.headers
        )

    def spent(self, dataset: str = "social_insurance", level: str = "grant") -> str:
        view = self.client.get("/v1/budget", headers=self.headers).json()
        (row,) = [b for b in view["budgets"] if b["dataset"] == dataset]
        spent: str = row["levels"][level]["spent"]["epsilon"]
        return spent


@pytest.fixture
def research(installation: Installation, bundle_app: Callable[..., TestClient]) -> Callable[..., Research]:
    """A factory: a researcher's client on a private installation with the payroll dataset, under
    the demo bundle plus the payroll templates, with `change` applied last."""
    register_payroll(installation)

    def factory(change: Callable[[dict[str, Any]], None] | None = None, who: str = "demo-researcher") -> Research:
        def apply(bundle: dict[str, Any]) -> None:
            payroll_templates(bundle)
            if change is not None:
                change(bundle)

        client = bundle_app(apply)
        return Research(client, bearer(get_token(client, who, installation.credentials[who])), installation)

    return factory
