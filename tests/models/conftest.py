"""Factories for model tests: a synthetic dataset with a known linear relation, and clients."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from gateway.catalog import CatalogStore
from gateway.services import registration
from tests.conftest import Installation, bearer, get_token

TRUE_COEFFICIENTS = {"intercept": 2.0, "x1": 1.5, "x2": -0.8}
SYNTHETIC_ROWS = 20_000
SYNTHETIC_ENTRY = """\
dataset: synthetic
registration_code: "PDR-TEST-0002"
title: Synthetic linear relation
owner_body: Test body
source_system: Test system
classification: {domain: test, category: synthetic}
level: general
privacy_unit: {column: unit, max_rows: 1}
columns:
  - {name: unit, type: string, sensitivity: identifier}
  - {name: x1, type: float, sensitivity: personal, bounds: [0, 10]}
  - {name: x2, type: float, sensitivity: personal, bounds: [-5, 5]}
  - {name: y, type: float, sensitivity: personal, bounds: [-20, 40]}
  - {name: label, type: string, sensitivity: public, categories: [low, high]}
  - {name: flag, type: boolean, sensitivity: public}
"""


def register_synthetic(inst: Installation) -> None:
    rng = np.random.default_rng(20261128)
    x1 = rng.uniform(0, 10, SYNTHETIC_ROWS)
    x2 = rng.uniform(-5, 5, SYNTHETIC_ROWS)
    y = TRUE_COEFFICIENTS["intercept"] + TRUE_COEFFICIENTS["x1"] * x1 + TRUE_COEFFICIENTS["x2"] * x2
    y = np.clip(y + rng.normal(0, 1.0, SYNTHETIC_ROWS), -20, 40)
    flag = rng.uniform(0, 1, SYNTHETIC_ROWS) < np.where(y > 10, 0.8, 0.3)
    table = pa.table(
        {
            "unit": [f"S{i:06d}" for i in range(SYNTHETIC_ROWS)],
            "x1": x1,
            "x2": x2,
            "y": y,
            "label": np.where(y > 10, "high", "low"),
            "flag": flag,
        }
    )
    entry = inst.root / "synthetic.yaml"
    entry.write_text(SYNTHETIC_ENTRY)
    source = inst.root / "synthetic.parquet"
    pq.write_table(table, source)
    registration.register(CatalogStore(inst.settings.data_path), inst.settings.data_path, entry, source)


def synthetic_models(bundle: dict[str, Any]) -> None:
    card = {
        "purpose": "test",
        "inputs": "x1, x2",
        "outputs": "coefficients",
        "owner": "tests",
        "approved_on": "2026-01-01",
    }
    bundle["models"]["synthetic-regression"] = {
        "kind": "linear_regression",
        "title": "y on x1 and x2",
        "card": card,
        "dataset": "synthetic",
        "features": ["x1", "x2"],
        "target": "y",
        "epsilon": {"default": "1", "max": "10"},
    }
    bundle["models"]["synthetic-bayes"] = {
        "kind": "naive_bayes",
        "title": "label from flag",
        "card": card,
        "dataset": "synthetic",
        "features": ["flag"],
        "target": "label",
        "epsilon": {"default": "1", "max": "10"},
    }
    bundle["dataset_budgets"]["synthetic"] = {"epsilon": "100000"}
    bundle["grants"]["labour-research-2026"]["services"] += ["synthetic-regression", "synthetic-bayes"]
    bundle["grants"]["labour-research-2026"]["budget"] = {"epsilon": "100000", "delta": "0.00001"}
    bundle["organisations"]["demo-university"]["budget"] = {"epsilon": "100000", "delta": "0.0001"}


@dataclass
class Client:
    client: TestClient
    headers: dict[str, str]
    installation: Installation

    def fit(self, model: str, **body: Any) -> Any:
        return self.client.post(
            f"/v1/models/{model}/fit", json={"purpose": "public_research", **body}, headers=self.headers
        )

    def score(self, keys: list[str], model: str = "enterprise-credit-risk", purpose: str = "credit_assessment") -> Any:
        return self.client.post(
            f"/v1/models/{model}/score", json={"purpose": purpose, "keys": keys}, headers=self.headers
        )


@pytest.fixture
def models_gateway(installation: Installation, bundle_app: Callable[..., TestClient]) -> Callable[..., Client]:
    register_synthetic(installation)

    def factory(change: Callable[[dict[str, Any]], None] | None = None, who: str = "demo-researcher") -> Client:
        def apply(bundle: dict[str, Any]) -> None:
            synthetic_models(bundle)
            if change is not None:
                change(bundle)

        client = bundle_app(apply)
        return Client(client, bearer(get_token(client, who, installation.credentials[who])), installation)

    return factory
