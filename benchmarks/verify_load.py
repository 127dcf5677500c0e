"""Verification under load, over loopback, against a bare endpoint of the same server.

Starts a demo gateway (`veilgate serve`, one uvicorn worker unless --workers) on a fresh demo domain, then
drives it with wrk for a fixed time at a fixed number of connections:

- baseline: `GET /healthz`, which does no work at all;
- verification: `POST /v1/verify/enterprise-registration` with one claim per request, every
  claim new (a different enterprise or a different question), with authentication, policy,
  the ledger (rate, quota, distinct keys, probing), the lookup, the audit leaf (durable before
  the response) and the signed receipt all on.

The benchmark serves a copy of the demo bundle with the consumer's limits raised, so that the
limits measure their cost instead of refusing the load. Needs wrk (`apt install wrk`).

    python benchmarks/verify_load.py [--seconds 15] [--connections 16] [--scale 1]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

from gateway.services import demo_setup

REPO = Path(__file__).resolve().parent.parent

LUA = """
local bodies = {}
local token = os.getenv("VG_TOKEN")
local path = os.getenv("VG_PATH")
for line in io.lines(os.getenv("VG_BODIES")) do bodies[#bodies + 1] = line end
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("offset", threads * 7919)
end
function init(args)
  counter = offset or 0
end
function request()
  counter = counter + 1
  local body = bodies[(counter % #bodies) + 1]
  return wrk.format("POST", path, {["Content-Type"] = "application/json",
                                   ["Authorization"] = "Bearer " .. token}, body)
end
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _bench_bundle(target: Path) -> None:
    """The demo bundle with limits raised so that the load is measured, not refused."""
    shutil.copytree(REPO / "policies", target)
    services = yaml.safe_load((target / "verification.yaml").read_text())
    for service in services["verification_services"].values():
        service["limits"] = {
            "consumer_per_minute": 10_000_000,
            "organisation_per_minute": 10_000_000,
            "distinct_keys_per_day": 10_000_000,
            "probe_checks_per_key": 100,
        }
    (target / "verification.yaml").write_text(yaml.safe_dump(services, allow_unicode=True))
    grants = yaml.safe_load((target / "grants.yaml").read_text())
    for grant in grants["grants"].values():
        grant["quotas"] = {"daily_claims": 100_000_000}
    (target / "grants.yaml").write_text(yaml.safe_dump(grants, allow_unicode=True))


def _bodies(source: Path, count: int) -> list[str]:
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


def _wrk(url: str, seconds: int, connections: int, script: Path | None, env: dict[str, str]) -> dict[str, float]:
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if script is not None:
        command[1:1] = ["-s", str(script)]
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout  # noqa: S603
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)

    def percentile(p: str) -> float:
        value, unit = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return {
        "rps": rate,
        "p50": percentile("50"),
        "p99": percentile("99"),
        "non2xx": float(bad.group(1)) if bad else 0.0,
        "socket_errors": 1.0 if errors else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("this benchmark needs wrk: apt install wrk")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _bench_bundle(root / "policies")
        setup = demo_setup.setup(root / "demo", root / "policies", scale=args.scale)
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(  # noqa: S603 - our own CLI
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "serve",
                "--config",
                str(setup.config_file),
                "--port",
                str(port),
                "--workers",
                str(args.workers),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(200):
                try:
                    urllib.request.urlopen(f"{base}/healthz", timeout=1).read()  # noqa: S310 - loopback
                    break
                except OSError:
                    time.sleep(0.05)
            form = (
                "grant_type=client_credentials&client_id=demo-business&client_secret="
                + setup.credentials["demo-business"]
            )
            token_request = urllib.request.Request(f"{base}/v1/token", data=form.encode(), method="POST")  # noqa: S310
            token = json.load(urllib.request.urlopen(token_request))["access_token"]  # noqa: S310
            bodies_file, script = root / "bodies.jsonl", root / "verify.lua"
            bodies_file.write_text("\n".join(_bodies(root / "demo" / "source", 200_000)) + "\n")
            script.write_text(LUA)
            env = {
                **os.environ,
                "VG_TOKEN": token,
                "VG_BODIES": str(bodies_file),
                "VG_PATH": "/v1/verify/enterprise-registration",
            }
            _wrk(f"{base}/healthz", 2, args.connections, None, env)  # warm up
            _wrk(base, 2, args.connections, script, env)
            bare = _wrk(f"{base}/healthz", args.seconds, args.connections, None, env)
            verify = _wrk(base, args.seconds, args.connections, script, env)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    workers = f"{args.workers} uvicorn worker(s)"
    print(f"{args.connections} connections, {args.seconds} s each, {workers}, {os.cpu_count()} cores")
    for name, run in (("bare GET /healthz (baseline)", bare), ("verification, one claim", verify)):
        print(
            f"{name:32} {run['rps']:8.0f} req/s   p50 {run['p50']:6.2f} ms   p99 {run['p99']:6.2f} ms"
            f"   non-2xx {run['non2xx']:.0f}"
        )
    print(f"verification throughput / bare: {verify['rps'] / bare['rps']:.2f}  (target >= 0.50)")
    print(f"verification p99: {verify['p99']:.2f} ms  (target < 25 ms)")


if __name__ == "__main__":
    main()
