"""Verification under load, over loopback, against a fixed reference: a bare FastAPI GET on stock uvicorn.

Starts a demo gateway (`veilgate serve`, with one worker and with two) on a fresh demo domain, then
drives it with wrk for a fixed time at a fixed number of connections (benchmarks/load.py):

- reference: a bare async FastAPI GET on stock uvicorn (asyncio, h11, one worker), in the same run;
- verification: `POST /v1/verify/enterprise-registration` with one claim per request, every
  claim new (a different enterprise or a different question), with authentication, policy,
  the ledger (rate, quota, distinct keys, probing), the lookup, the audit leaf (durable before
  the response) and the signed receipt all on.

The benchmark serves a copy of the demo bundle with the consumer's limits raised, so that the
limits measure their cost instead of refusing the load. Needs wrk (`apt install wrk`).

    python benchmarks/verify_load.py [--seconds 15] [--connections 16] [--scale 1] [--rounds 3]
        [--database-dsn postgresql://...]   (the state replicas share, in PostgreSQL)
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import load
import pyarrow.parquet as pq
import yaml

RAISED = {
    "consumer_per_minute": 10_000_000,
    "organisation_per_minute": 10_000_000,
    "distinct_keys_per_day": 10_000_000,
    "probe_checks_per_key": 100,
}


def raise_limits(target: Path) -> None:
    """The demo bundle with limits raised so that the load is measured, not refused."""
    for name, section in (("verification.yaml", "verification_services"), ("models.yaml", "models")):
        data = yaml.safe_load((target / name).read_text())
        for service in data[section].values():
            if section == "verification_services" or service.get("kind") == "scorecard":
                service["limits"] = dict(RAISED)
        (target / name).write_text(yaml.safe_dump(data, allow_unicode=True))
    grants = yaml.safe_load((target / "grants.yaml").read_text())
    for grant in grants["grants"].values():
        grant["quotas"] = {"daily_claims": 100_000_000}
    (target / "grants.yaml").write_text(yaml.safe_dump(grants, allow_unicode=True))


def _bodies(source: Path, count: int = 200_000) -> list[str]:
    codes = pq.read_table(source / "enterprise_registry.parquet", columns=["credit_code"]).column(0).to_pylist()
    rng = random.Random(20261128)
    bodies = []
    for i in range(count):
        code = codes[i % len(codes)]
        # A new question each time: the ledger counts every claim (no free repeats).
        checks: dict[str, Any] = {"legal_representative": f"guess {i // len(codes)}"}
        if rng.random() < 0.5:
            checks["active"] = True
        bodies.append(
            json.dumps({"purpose": "credit_assessment", "claims": [{"keys": {"credit_code": code}, "checks": checks}]})
        )
    return bodies


def main() -> None:
    load.measure(
        __doc__,
        name="verification, one claim",
        path="/v1/verify/enterprise-registration",
        client="demo-business",
        adapt_bundle=raise_limits,
        make_bodies=_bodies,
        ratio_targets=(0.6, 1.0),
        p99_target=20,
    )


if __name__ == "__main__":
    main()
