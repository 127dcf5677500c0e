"""Scoring under load, over loopback, against a fixed reference: a bare FastAPI GET on stock uvicorn.

`POST /v1/models/enterprise-credit-risk/score` with one enterprise per request (authentication,
policy, the features computed in the domain from two datasets, the scorecard, the ledger's
limits, the audit leaf durable before the response, the signed receipt), next to the reference
(a bare FastAPI GET on stock uvicorn) in the same run (benchmarks/load.py). Every request scores a different
enterprise until all have been scored; repeats are then answered from the ledger, as in service.
Needs wrk (`apt install wrk`).

    python benchmarks/score_load.py [--seconds 15] [--connections 16] [--scale 1] [--rounds 3]
        [--database-dsn postgresql://...]   (the state replicas share, in PostgreSQL)
"""

from __future__ import annotations

import json
from pathlib import Path

import load
import pyarrow.parquet as pq
from verify_load import raise_limits


def _bodies(source: Path) -> list[str]:
    codes = pq.read_table(source / "enterprise_registry.parquet", columns=["credit_code"]).column(0).to_pylist()
    return [json.dumps({"purpose": "credit_assessment", "keys": [code]}) for code in codes]


def main() -> None:
    load.measure(
        __doc__,
        name="scoring, one entity",
        path="/v1/models/enterprise-credit-risk/score",
        client="demo-business",
        adapt_bundle=raise_limits,
        make_bodies=_bodies,
        ratio_targets=(0.5, 0.9),
        p99_target=20,
    )


if __name__ == "__main__":
    main()
