"""A gateway release against the same exact aggregate run directly in DuckDB, in one process.

For count, sum and mean of the contribution wage base grouped by region on `social_insurance`,
the gateway path is the whole release without HTTP: authorize against the policy, plan, reserve
the budget, run the clamped aggregate in DuckDB, add OpenDP noise, commit the charge and store
the release, append the audit leaf (durable), sign the receipt. Every query is a new one (its
epsilon differs by a millionth), so none is answered from the release store. The baseline is
the plain `GROUP BY` on the same dataset version with the same DuckDB thread count.

    python benchmarks/aggregate.py                 # scale 25: about 10 M rows (setup takes minutes)
    python benchmarks/aggregate.py --scale 1       # about 0.4 M rows, quick
    python benchmarks/aggregate.py --keep /tmp/agg # set up once in /tmp/agg, reuse it next time
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import yaml

from gateway.domain.principal import Principal, Role
from gateway.domain.trail import AuditEvent, Decision, utc_now
from gateway.engine import SERVING_CONFIG, version_path
from gateway.services import aggregate, demo_setup
from gateway.services.runtime import Runtime
from gateway.settings import load_settings

REPO = Path(__file__).resolve().parent.parent
CASES = {
    "count": ("contributors-count", "SELECT region, count(*) FROM records GROUP BY region"),
    "sum": ("wage-base-total", "SELECT region, sum(wage_base) FROM records GROUP BY region"),
    "mean": ("wage-base-mean", "SELECT region, avg(wage_base) FROM records GROUP BY region"),
}


def _policies(target: Path) -> Path:
    """The demo bundle with budgets large enough for every repetition."""
    merged: dict[str, Any] = {}
    for path in sorted((REPO / "policies").glob("*.yaml")):
        merged.update(yaml.safe_load(path.read_text()) or {})
    merged["grants"]["labour-research-2026"]["budget"] = {"epsilon": "100000"}
    merged["organisations"]["demo-university"]["budget"] = {"epsilon": "100000"}
    merged["dataset_budgets"]["social_insurance"] = {"epsilon": "100000"}
    target.mkdir()
    (target / "bundle.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))
    return target


def _event() -> AuditEvent:
    return AuditEvent(
        time=utc_now(),
        request_id=f"bench-{time.perf_counter_ns()}",
        principal="demo-researcher",
        organisation="demo-university",
        method="POST",
        route="/v1/aggregate/{template}",
        decision=Decision.ALLOWED,
        status=200,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=25.0)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--keep", type=Path, help="set up in this directory and keep it; reuse it if it exists")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        if (root / "demo" / "veilgate.toml").exists():
            settings = load_settings(root / "demo" / "veilgate.toml")
            print(f"reusing the installation in {root}")
        else:
            root.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            settings = demo_setup.setup(root / "demo", _policies(root / "policies"), scale=args.scale).settings
            print(f"setup (generate and register, scale {args.scale:g}): {time.perf_counter() - started:.1f} s")
        rt = Runtime.open(settings)
        try:
            record = rt.catalog.get("social_insurance")
            print(f"social_insurance: {record.rows:,} rows, engine threads {settings.engine_threads}")
            config: dict[str, Any] = {**SERVING_CONFIG, "threads": settings.engine_threads}
            raw = duckdb.connect(
                str(version_path(settings.data_path, "social_insurance", record.version)), read_only=True, config=config
            )
            who = Principal("demo-researcher", "demo-university", frozenset({Role.RESEARCHER}), "bench")
            step = secrets.randbelow(10**6)  # a reused installation has released earlier steps
            print(f"{'measure':8} {'DuckDB exact':>14} {'gateway release':>16} {'ratio':>7}")
            for name, (template, sql) in CASES.items():
                baseline: list[float] = []
                gateway: list[float] = []
                for _ in range(args.repeat):
                    started = time.perf_counter()
                    raw.execute(sql).fetchall()
                    baseline.append(time.perf_counter() - started)
                    step += 1
                    epsilon = str(Decimal("0.5") + Decimal(step) / 10**6)
                    query = aggregate.Query(template, {"group_by": ["region"]}, epsilon)
                    started = time.perf_counter()
                    batch = aggregate.authorize_batch(rt, who, "public_research", [query])
                    released = aggregate.release_batch(rt, who, _event(), batch, single=True)
                    gateway.append(time.perf_counter() - started)
                    if released.document["result"]["replayed"]:
                        raise SystemExit("a query was replayed: the benchmark would measure the release store")
                exact, release = statistics.median(baseline), statistics.median(gateway)
                print(f"{name:8} {exact * 1000:11.1f} ms {release * 1000:13.1f} ms {release / exact:6.2f}x")
            raw.close()
        finally:
            rt.close()


if __name__ == "__main__":
    main()
