"""Registration cost against a plain DuckDB load of the same file, in the same process.

Registration checks every value against the catalogue, enforces the contribution bound once
(a window function) and builds the lookup indexes; the baseline only copies the Parquet file
into a DuckDB table. The ratio says what the guarantees cost at registration time, which is
the price of letting every query scan at raw speed later.

    python benchmarks/registration.py --scale 1        # ~0.4 M contribution rows
    python benchmarks/registration.py --scale 25       # ~10 M contribution rows
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from gateway import demo_data
from gateway.catalog import CatalogStore
from gateway.services import registration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        summary = demo_data.generate(root / "source", scale=args.scale)
        generated = time.perf_counter() - started
        rows = pq.read_metadata(summary.files["social_insurance"]).num_rows
        print(f"generate scale {args.scale:g}: {rows:,} social_insurance rows in {generated:.2f} s")

        source = summary.files["social_insurance"]
        started = time.perf_counter()
        con = duckdb.connect(str(root / "baseline.duckdb"))
        con.execute("CREATE TABLE records AS SELECT * FROM read_parquet($1)", [str(source)])
        con.execute("CHECKPOINT")
        con.close()
        baseline = time.perf_counter() - started

        data_dir = root / "data"
        started = time.perf_counter()
        outcome = registration.register(
            CatalogStore(data_dir), data_dir, root / "source" / "social_insurance.yaml", source
        )
        registered = time.perf_counter() - started
        print(f"baseline (plain load):         {baseline:8.2f} s")
        print(
            f"registration (checks, bound, indexes): {registered:8.2f} s  "
            f"({outcome.rows_dropped_by_contribution_bound:,} rows dropped by the bound)"
        )
        print(f"ratio registration / baseline: {registered / baseline:8.1f}x")


if __name__ == "__main__":
    main()
