"""The Spark engine (local) against DuckDB on the same rows: registration and exact aggregates.

Generates social-insurance-shaped rows (as benchmarks/registration.py does), registers them on
both engines, then computes the exact statistics of every aggregate template of the shipped
policy bundle (grouped by its group-by columns) on each, `--repeat` times, and prints the
medians and their ratio. Noise is the gateway's on either engine, so it is left out.

    python benchmarks/spark_engine.py --rows 10000000

Ends with one JSON line: {"rows", "duckdb_seconds", "spark_seconds", "ratio", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

from gateway import demo_data
from gateway.catalog import CatalogStore
from gateway.domain.aggregate import MAX_GROUP_BY, plan
from gateway.engine import BuildLimits, Domain
from gateway.policy import load_bundle
from gateway.services import registration

sys.path.insert(0, str(Path(__file__).resolve().parent))
from registration import generate

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--master", default="local[*]")
    parser.add_argument("--templates", type=int, default=None, help="only the first N templates (by name)")
    args = parser.parse_args()
    bundle = load_bundle(REPO / "policies")
    templates = {n: t for n, t in sorted(bundle.aggregate_templates.items()) if t.dataset == "social_insurance"}
    templates = dict(list(templates.items())[: args.templates])
    with tempfile.TemporaryDirectory(dir=os.environ.get("VEILGATE_BENCH_DIR")) as tmp:
        root = Path(tmp)
        source = root / "social_insurance.parquet"
        generate(source, args.rows)
        raw = yaml.safe_load(demo_data.catalog_entry_text("social_insurance"))
        (root / "duckdb.yaml").write_text(yaml.safe_dump(raw))
        (root / "spark.yaml").write_text(yaml.safe_dump({**raw, "engine": "spark"}))
        limits = BuildLimits(spark_master=args.master, temp_directory=root / "spill")
        timings = {}
        versions = {}
        for name in ("duckdb", "spark"):
            data = root / name
            started = time.perf_counter()
            outcome = registration.register(CatalogStore(data), data, root / f"{name}.yaml", str(source), limits=limits)
            timings[name] = time.perf_counter() - started
            versions[name] = (outcome.record.entry, outcome.record.version)
            print(f"registration on {name:6}: {timings[name]:8.2f} s ({outcome.rows:,} rows kept)")
        medians = {}
        for name in ("duckdb", "spark"):
            entry, version = versions[name]
            domain = Domain(root / name, spark_master=args.master)
            runs = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                for template_name, template in sorted(templates.items()):
                    parameters = {"group_by": list(template.group_by)[:MAX_GROUP_BY]}
                    compiled = plan(template_name, template, entry, version, parameters, epsilon=None)
                    with domain.snapshot("social_insurance", version) as snap:
                        snap.grouped_counts(compiled) if compiled.selects_keys else snap.aggregate(compiled)
                runs.append(time.perf_counter() - started)
            domain.close()
            medians[name] = statistics.median(runs)
            print(f"{len(templates)} templates on {name:6}: {medians[name]:8.2f} s (median of {args.repeat})")
        ratio = medians["spark"] / medians["duckdb"]
        registration_ratio = timings["spark"] / timings["duckdb"]
        print(f"ratio spark / duckdb: {ratio:8.2f}x aggregates, {registration_ratio:8.2f}x registration")
        print(
            json.dumps(
                {
                    "rows": args.rows,
                    "duckdb_seconds": round(medians["duckdb"], 3),
                    "spark_seconds": round(medians["spark"], 3),
                    "ratio": round(ratio, 2),
                    "registration_ratio": round(registration_ratio, 2),
                    "master": args.master,
                    "templates": len(templates),
                    "load_average_1m": round(os.getloadavg()[0], 2),
                }
            )
        )


if __name__ == "__main__":
    main()
