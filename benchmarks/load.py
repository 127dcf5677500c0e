"""The load harness shared by the HTTP benchmarks: a demo gateway, wrk, and a bare baseline.

`run` sets up a fresh demo domain under a bundle the caller adapts, serves it with `veilgate
serve`, takes a token for one demo client, and drives wrk runs of the same length and
concurrency against the same server, in rounds: `GET /healthz`, which does no work, then the
caller's POST endpoint with the caller's bodies (one per request, cycling). `report` prints each
round and the medians: throughput on a shared virtual machine varies by a quarter between runs,
and a ratio taken within one round is steadier than either figure. Needs wrk (`apt install wrk`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

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


def wrk(url: str, seconds: int, connections: int, script: Path | None, env: dict[str, str]) -> dict[str, float]:
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


def arguments(doc: str | None) -> argparse.Namespace:
    """The options every load benchmark takes."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--rounds", type=int, default=3, help="bare and measured runs, alternating")
    parser.add_argument("--database-dsn", help="serve with database_dsn (a schema of its own, dropped after)")
    return parser.parse_args()


@contextlib.contextmanager
def database(config_file: Path, dsn: str | None) -> Iterator[None]:
    """With `dsn`: the gateway's shared state in a new schema of that database, dropped afterwards."""
    if dsn is None:
        yield
        return
    import psycopg  # noqa: PLC0415 - only for this option

    schema = f"vg_bench_{secrets.token_hex(4)}"
    with config_file.open("a", encoding="utf-8") as config:
        config.write(f'database_dsn = "{dsn}"\ndatabase_schema = "{schema}"\n')
    try:
        yield
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(psycopg.sql.Identifier(schema)))


def run(
    *,
    path: str,
    client: str,
    adapt_bundle: Callable[[Path], None],
    make_bodies: Callable[[Path], list[str]],
    seconds: int,
    connections: int,
    scale: float,
    workers: int,
    rounds: int = 1,
    database_dsn: str | None = None,
) -> list[tuple[dict[str, float], dict[str, float]]]:
    """Per round, (bare /healthz, the endpoint under test): requests/s, p50 and p99 in ms, non-2xx."""
    if shutil.which("wrk") is None:
        sys.exit("this benchmark needs wrk: apt install wrk")
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        shutil.copytree(REPO / "policies", root / "policies")
        adapt_bundle(root / "policies")
        setup = demo_setup.setup(root / "demo", root / "policies", scale=scale)
        stack.enter_context(database(setup.config_file, database_dsn))
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(setup.config_file)]
        command += ["--port", str(port), "--workers", str(workers)]
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
        try:
            for _ in range(200):
                try:
                    urllib.request.urlopen(f"{base}/healthz", timeout=1).read()  # noqa: S310 - loopback
                    break
                except OSError:
                    time.sleep(0.05)
            form = f"grant_type=client_credentials&client_id={client}&client_secret={setup.credentials[client]}"
            token_request = urllib.request.Request(f"{base}/v1/token", data=form.encode(), method="POST")  # noqa: S310
            token = json.load(urllib.request.urlopen(token_request))["access_token"]  # noqa: S310
            bodies_file, script = root / "bodies.jsonl", root / "load.lua"
            bodies_file.write_text("\n".join(make_bodies(root / "demo" / "source")) + "\n")
            script.write_text(LUA)
            env = {**os.environ, "VG_TOKEN": token, "VG_BODIES": str(bodies_file), "VG_PATH": path}
            wrk(f"{base}/healthz", 2, connections, None, env)  # warm up
            wrk(base, 2, connections, script, env)
            results = []
            for _ in range(rounds):
                bare = wrk(f"{base}/healthz", seconds, connections, None, env)
                results.append((bare, wrk(base, seconds, connections, script, env)))
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    return results


def report(name: str, results: list[tuple[dict[str, float], dict[str, float]]], *, connections: int, seconds: int,
           workers: int, ratio_target: float, p99_target: float | None) -> None:  # fmt: skip
    print(f"{connections} connections, {seconds} s each, {workers} uvicorn worker(s), {os.cpu_count()} cores")
    for number, (bare, measured) in enumerate(results, 1):
        for label, result in ((f"{number}. bare GET /healthz (baseline)", bare), (f"{number}. {name}", measured)):
            print(
                f"{label:35} {result['rps']:8.0f} req/s   p50 {result['p50']:6.2f} ms   p99 {result['p99']:6.2f} ms"
                f"   non-2xx {result['non2xx']:.0f}"
            )
        print(f"{number}. throughput / bare: {measured['rps'] / bare['rps']:.2f}")
    ratio = statistics.median(m["rps"] / b["rps"] for b, m in results)
    p99 = statistics.median(m["p99"] for _b, m in results)
    rate = statistics.median(m["rps"] for _b, m in results)
    print(f"median over {len(results)} round(s): {name} {rate:.0f} req/s")
    print(f"{name} throughput / bare: {ratio:.2f}  (target >= {ratio_target:.2f})")
    if p99_target is not None:
        print(f"{name} p99: {p99:.2f} ms  (target < {p99_target:g} ms)")


def measure(
    doc: str | None,
    *,
    name: str,
    path: str,
    client: str,
    adapt_bundle: Callable[[Path], None],
    make_bodies: Callable[[Path], list[str]],
    ratio_target: float,
    p99_target: float | None,
) -> None:
    """A load benchmark's whole run: its options from the command line, the rounds, the report."""
    args = arguments(doc)
    results = run(
        path=path,
        client=client,
        adapt_bundle=adapt_bundle,
        make_bodies=make_bodies,
        seconds=args.seconds,
        connections=args.connections,
        scale=args.scale,
        workers=args.workers,
        rounds=args.rounds,
        database_dsn=args.database_dsn,
    )
    print("shared state: " + ("PostgreSQL (database_dsn)" if args.database_dsn else "SQLite and files"))
    report(name, results, connections=args.connections, seconds=args.seconds, workers=args.workers,
           ratio_target=ratio_target, p99_target=p99_target)  # fmt: skip
