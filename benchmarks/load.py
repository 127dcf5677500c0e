"""The load harness shared by the HTTP benchmarks: a demo gateway, wrk, and a fixed reference.

`run` sets up a fresh demo domain under a bundle the caller adapts and serves it with `veilgate
serve`, once with one worker and once with two, beside the reference: a bare async FastAPI GET on
uvicorn as `pip install fastapi uvicorn` installs it (the standard asyncio loop and the h11
parser, one worker, no access log), started here in the same run. Each round drives wrk for the
same time at the same concurrency against the reference, then against the caller's POST endpoint
on each gateway (one body per request, cycling). `report` prints every run and the medians:
throughput on a shared machine varies by a quarter between runs, and a ratio taken within one
round is steadier than either figure. The CPU per request of each server (every process, all
threads) is read from /proc, and wrk's own from the kernel's account of its finished children.
On a machine where wrk and the servers share the cores, those figures turn each ratio target
into a CPU budget per request (`budget_us`): what the gateway may spend on one request for the
ratio to be reachable at all, against what it spends. The last line is one JSON object with the
medians. Needs wrk (`apt install wrk`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
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
WORKER_COUNTS = (1, 2)

REFERENCE_APP = """
from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def bare() -> dict[str, bool]:
    return {"ok": True}
"""

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

Result = dict[str, float]
REFERENCE_COMMAND = [sys.executable, "-m", "uvicorn", "reference_app:app", "--workers", "1", "--no-access-log"]
REFERENCE_COMMAND += ["--loop", "asyncio", "--http", "h11"]  # what `pip install fastapi uvicorn` runs


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wrk(url: str, seconds: int, connections: int, script: Path | None, env: dict[str, str]) -> Result:
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if script is not None:
        command[1:1] = ["-s", str(script)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout  # noqa: S603
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)

    def percentile(p: str) -> float:
        value, unit = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return {
        "rps": rate,
        "requests": total,
        "p50": percentile("50"),
        "p99": percentile("99"),
        "non2xx": float(bad.group(1)) if bad else 0.0,
        "socket_errors": 1.0 if errors else 0.0,
        "client_cpu_us": client_cpu / max(1.0, total) * 1e6,
    }


def _stat(path: Path) -> tuple[int, float]:
    """From a /proc stat file: the parent's pid, and user plus system CPU in seconds."""
    fields = path.read_text().rsplit(")", 1)[1].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _thread_cpu_seconds(pid: int) -> float:
    """User and system CPU of the first thread of `pid`: a one-worker server's event loop."""
    return _stat(Path(f"/proc/{pid}/task/{pid}/stat"))[1]


def _tree_cpu_seconds(root: int) -> float:
    """User and system CPU of `root` and every live process descended from it, all threads."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parents[int(entry.name)], times[int(entry.name)] = _stat(entry / "stat")
        except OSError:
            continue
    tree = {root}
    grew = True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        grew = bool(more)
        tree |= more
    return sum(times.get(pid, 0.0) for pid in tree)


def arguments(doc: str | None) -> argparse.Namespace:
    """The options every load benchmark takes."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3, help="reference and gateway runs, alternating")
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


@contextlib.contextmanager
def _server(command: list[str], cwd: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A server process, stopped (SIGTERM) afterwards."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd)  # noqa: S603
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def _wait_until_up(process: subprocess.Popen[bytes], url: str) -> None:
    for _ in range(1200):
        try:
            urllib.request.urlopen(url, timeout=1).read()  # noqa: S310 - loopback
            return
        except OSError:
            if process.poll() is not None:
                sys.exit(f"the server exited with {process.returncode}: {' '.join(map(str, process.args))}")
            time.sleep(0.05)
    sys.exit(f"no server answered at {url}")


def run(
    *,
    path: str,
    client: str,
    adapt_bundle: Callable[[Path], None],
    make_bodies: Callable[[Path], list[str]],
    seconds: int,
    connections: int,
    scale: float,
    rounds: int = 1,
    database_dsn: str | None = None,
) -> list[dict[str, Result]]:
    """Per round: the reference, then the endpoint on each gateway ("1", "2" workers)."""
    if shutil.which("wrk") is None:
        sys.exit("this benchmark needs wrk: apt install wrk")
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        shutil.copytree(REPO / "policies", root / "policies")
        adapt_bundle(root / "policies")
        setup = demo_setup.setup(root / "demo", root / "policies", scale=scale)
        stack.enter_context(database(setup.config_file, database_dsn))
        (root / "reference_app.py").write_text(REFERENCE_APP)
        reference_port = _free_port()
        reference = f"http://127.0.0.1:{reference_port}/"
        reference_server = stack.enter_context(
            _server(
                [*REFERENCE_COMMAND, "--port", str(reference_port)],
                cwd=root,
            )
        )
        gateways: dict[str, tuple[str, int]] = {}
        started = [(reference_server, reference)]
        for workers in WORKER_COUNTS:  # started together, awaited together: a shorter smoke run
            port = _free_port()
            base = f"http://127.0.0.1:{port}"
            command = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(setup.config_file)]
            command += ["--port", str(port), "--workers", str(workers)]
            gateway = stack.enter_context(_server(command))
            gateways[str(workers)] = (base, gateway.pid)
            if database_dsn is not None:  # the first creates the shared schema; the next waits for it
                _wait_until_up(gateway, f"{base}/healthz")
            started.append((gateway, f"{base}/healthz"))
        for process, url in started:
            _wait_until_up(process, url)
        first = next(iter(gateways.values()))[0]
        form = f"grant_type=client_credentials&client_id={client}&client_secret={setup.credentials[client]}"
        token_request = urllib.request.Request(f"{first}/v1/token", data=form.encode(), method="POST")  # noqa: S310
        token = json.load(urllib.request.urlopen(token_request))["access_token"]  # noqa: S310
        bodies_file, script = root / "bodies.jsonl", root / "load.lua"
        bodies_file.write_text("\n".join(make_bodies(root / "demo" / "source")) + "\n")
        script.write_text(LUA)
        env = {**os.environ, "VG_TOKEN": token, "VG_BODIES": str(bodies_file), "VG_PATH": path}
        warm = min(2, seconds)
        wrk(reference, warm, connections, None, env)
        for base, _pid in gateways.values():
            wrk(base, warm, connections, script, env)
        results = []
        for _ in range(rounds):
            cpu = _tree_cpu_seconds(reference_server.pid)
            bare = wrk(reference, seconds, connections, None, env)
            bare["cpu_us"] = _per_request(_tree_cpu_seconds(reference_server.pid) - cpu, bare)
            found = {"reference": bare}
            for workers, (base, pid) in gateways.items():
                cpu, loop = _tree_cpu_seconds(pid), _thread_cpu_seconds(pid)
                found[workers] = wrk(base, seconds, connections, script, env)
                found[workers]["cpu_us"] = _per_request(_tree_cpu_seconds(pid) - cpu, found[workers])
                if workers == "1":  # one process: its first thread runs the event loop
                    found[workers]["loop_cpu_us"] = _per_request(_thread_cpu_seconds(pid) - loop, found[workers])
            results.append(found)
    return results


def _per_request(cpu_seconds: float, result: Result) -> float:
    return cpu_seconds / max(1.0, result["requests"]) * 1e6


def budget_us(reference_rps: float, target: float, workers: int, client_cpu_us: float) -> float:
    """The server CPU per request (µs) at which `target` times the reference's rate takes every
    core the run may use: one worker's event loop runs on one core; with more, the workers share
    the machine's cores with wrk, which spends `client_cpu_us` on each request.

    A necessary condition, not a sufficient one: a gateway that spends more per request cannot
    reach the target on this machine, whatever its latency. It is generous where the run has
    other costs (a PostgreSQL server's own CPU is not counted); for one worker it bounds the
    event loop's thread (`loop_cpu_us`), while the worker's commit threads may use another core."""
    rate = target * reference_rps
    if workers == 1:
        return 1e6 / rate
    return min(workers, os.cpu_count() or 1) * 1e6 / rate - client_cpu_us


def _line(label: str, result: Result) -> str:
    cpu = ""
    if "cpu_us" in result:
        cpu = f"   CPU {result['cpu_us']:5.0f} µs/request (wrk {result['client_cpu_us']:3.0f})"
    return (
        f"{label:44} {result['rps']:8.0f} req/s   p50 {result['p50']:6.2f} ms   p99 {result['p99']:6.2f} ms"
        f"   non-2xx {result['non2xx']:.0f}{cpu}"
    )


def report(name: str, results: list[dict[str, Result]], *, connections: int, seconds: int,
           ratio_targets: tuple[float, float], p99_target: float, database_dsn: str | None) -> None:  # fmt: skip
    load = os.getloadavg()
    print(f"{connections} connections, {seconds} s each, {os.cpu_count()} cores, load average {load[0]:.1f} at the end")
    print("shared state: " + ("PostgreSQL (database_dsn)" if database_dsn else "SQLite and files"))
    print("reference: bare async FastAPI GET on stock uvicorn (asyncio loop, h11), one worker")
    for number, found in enumerate(results, 1):
        print(_line(f"{number}. reference", found["reference"]))
        for workers in WORKER_COUNTS:
            measured = found[str(workers)]
            print(_line(f"{number}. {name}, {workers} worker(s)", measured))
            ratio = measured["rps"] / found["reference"]["rps"]
            print(f"{number}. ratio to the reference, {workers} worker(s): {ratio:.2f}")

    def median(key: str, workers: str | None = None) -> float:
        if workers is None:
            return statistics.median(f["reference"][key] for f in results)
        return statistics.median(f[workers][key] for f in results)

    ratios = [statistics.median(f[str(w)]["rps"] / f["reference"]["rps"] for f in results) for w in WORKER_COUNTS]
    print(f"median over {len(results)} round(s): reference {median('rps'):.0f} req/s, "
          f"CPU {median('cpu_us'):.0f} µs/request (wrk {median('client_cpu_us'):.0f})")  # fmt: skip
    budgets = []
    for workers, ratio, target in zip(WORKER_COUNTS, ratios, ratio_targets, strict=True):
        client = median("client_cpu_us", str(workers))
        budgets.append(budget_us(median("rps"), target, workers, client))
        loop = f", its event loop {median('loop_cpu_us', '1'):.0f}" if workers == 1 else ""
        print(f"{name}, {workers} worker(s): {median('rps', str(workers)):.0f} req/s, ratio {ratio:.2f} "
              f"(target >= {target:.2f}), p99 {median('p99', str(workers)):.2f} ms (target < {p99_target:g} ms), "
              f"CPU {median('cpu_us', str(workers)):.0f} µs/request{loop} (wrk {client:.0f}); "
              f"the target leaves the server {budgets[-1]:.0f} µs/request")  # fmt: skip
    figures = {
        "reference_rps": round(median("rps"), 1),
        "ratio_1_worker": round(ratios[0], 3),
        "ratio_2_workers": round(ratios[1], 3),
        "p99_ms": round(median("p99", "1"), 2),
        "p99_ms_2_workers": round(median("p99", "2"), 2),
        "rps_1_worker": round(median("rps", "1"), 1),
        "rps_2_workers": round(median("rps", "2"), 1),
        "cpu_us_per_request_1_worker": round(median("cpu_us", "1")),
        "loop_cpu_us_per_request_1_worker": round(median("loop_cpu_us", "1")),
        "cpu_us_per_request_2_workers": round(median("cpu_us", "2")),
        "reference_cpu_us_per_request": round(median("cpu_us")),
        "budget_us_1_worker": round(budgets[0]),
        "budget_us_2_workers": round(budgets[1]),
        "non2xx": int(sum(f[str(w)]["non2xx"] for f in results for w in WORKER_COUNTS)),
        "database": "postgresql" if database_dsn else "sqlite",
        "load_average_1min": round(load[0], 2),
    }
    print(json.dumps(figures))


def measure(
    doc: str | None,
    *,
    name: str,
    path: str,
    client: str,
    adapt_bundle: Callable[[Path], None],
    make_bodies: Callable[[Path], list[str]],
    ratio_targets: tuple[float, float],
    p99_target: float,
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
        rounds=args.rounds,
        database_dsn=args.database_dsn,
    )
    report(name, results, connections=args.connections, seconds=args.seconds, ratio_targets=ratio_targets,
           p99_target=p99_target, database_dsn=args.database_dsn)  # fmt: skip
