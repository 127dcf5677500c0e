"""CPU per request of verification and scoring, measured in process, against a bare endpoint.

Builds a demo installation under the load benchmarks' bundle (limits raised, benchmarks/
verify_load.py), opens the whole ASGI app (middleware, hot paths, ledger, audit log, receipts)
with its lifespan running, and calls it directly on one event loop with a fixed number of
requests in flight (no HTTP server, no sockets): the figure is the app's own CPU per request,
every thread of the process counted (commit threads included). The baseline, `GET /healthz`
through the same app, runs in the same run; a machine shared with others changes the wall
time far more than the CPU time.

    python benchmarks/request_cpu.py [--requests 3000] [--concurrency 16] [--rounds 3] [--scale 0.1]
        [--database-dsn postgresql://...]   (the state replicas share, in PostgreSQL)
        [--steps]   (the time of each step of the hot paths, request_steps.py)

Prints each round and the medians; the last line is one JSON object (`healthz_us`,
`verify_us`, `score_us`, `verify_ratio`, `score_ratio`: the route's CPU over the baseline's;
with `--steps`, `steps_us`: each route's µs per request by step). To see where the time goes
beyond the named steps, run it under `py-spy record --gil --threads -- python ...`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import load
import request_steps
import score_load
import uvloop
import verify_load

from gateway.app import create_app
from gateway.services import demo_setup

Message = dict[str, Any]
Headers = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True)
class Route:
    """What one measured route is sent: its method, path, bodies (cycled) and headers."""

    method: str
    path: str
    bodies: list[bytes]
    headers: Headers = ()


class App:
    """The app called as an ASGI server would call it; responses other than 200 stop the run."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def call(self, method: str, path: str, body: bytes = b"", headers: Headers = ()) -> tuple[int, bytes]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1"), (b"content-length", str(len(body)).encode()), *headers],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        sent = False

        async def receive() -> Message:
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        status, chunks = 0, []

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return status, b"".join(chunks)


@contextlib.asynccontextmanager
async def running(app: Any) -> AsyncIterator[None]:
    """The app's lifespan (background work, stores closed at the end), as a server runs it."""
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    task = asyncio.ensure_future(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, outbox.put)
    )
    await inbox.put({"type": "lifespan.startup"})
    started = await outbox.get()
    if started["type"] != "lifespan.startup.complete":
        sys.exit(f"the app did not start: {started}")
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await task


async def drive(app: App, route: Route, requests: int, concurrency: int, offset: int = 0) -> float:
    """CPU µs per request (all threads of the process) for `requests` calls, `concurrency` in flight."""
    issued = 0

    async def worker() -> None:
        nonlocal issued
        while issued < requests:
            number = issued
            issued += 1
            body = route.bodies[(offset + number) % len(route.bodies)] if route.bodies else b""
            status, answer = await app.call(route.method, route.path, body, route.headers)
            if status != 200:
                sys.exit(f"{route.method} {route.path} answered {status}: {answer[:300]!r}")

    cpu = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - cpu) / requests * 1e6


@contextlib.contextmanager
def installation(scale: float, dsn: str | None) -> Iterator[demo_setup.DemoSetup]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copytree(load.REPO / "policies", root / "policies")
        verify_load.raise_limits(root / "policies")
        setup = demo_setup.setup(root / "demo", root / "policies", scale=scale)
        with load.database(setup.config_file, dsn):
            yield setup


StepFigures = dict[str, dict[str, float]]


async def measure(args: argparse.Namespace, setup: demo_setup.DemoSetup) -> tuple[list[dict[str, float]], StepFigures]:
    from gateway.settings import load_settings  # noqa: PLC0415 - after the database option was written

    app = App(create_app(load_settings(setup.config_file)))
    source = setup.config_file.parent / "source"
    verify_bodies = [b.encode() for b in verify_load._bodies(source)]
    score_bodies = [b.encode() for b in score_load._bodies(source)]
    async with running(app.app):
        form = {"grant_type": "client_credentials", "client_id": "demo-business"}
        form["client_secret"] = setup.credentials["demo-business"]
        status, answer = await app.call(
            "POST", "/v1/token", urlencode(form).encode(), ((b"content-type", b"application/x-www-form-urlencoded"),)
        )
        if status != 200:
            sys.exit(f"no token: {answer!r}")
        token = json.loads(answer)["access_token"]
        post = ((b"content-type", b"application/json"), (b"authorization", f"Bearer {token}".encode()))
        healthz = Route("GET", "/healthz", [])
        routes = {
            "verify": Route("POST", "/v1/verify/enterprise-registration", verify_bodies, post),
            "score": Route("POST", "/v1/models/enterprise-credit-risk/score", score_bodies, post),
        }
        warm = min(200, args.requests)
        for route in (healthz, *routes.values()):
            await drive(app, route, warm, args.concurrency)
        results = []
        steps = request_steps.Steps()
        totals = {name: request_steps.Steps() for name in routes}
        with steps.installed() if args.steps else contextlib.nullcontext():
            for number in range(args.rounds):
                found = {"healthz": await drive(app, healthz, args.requests, args.concurrency)}
                for name, route in routes.items():
                    steps.clear()
                    offset = warm + number * args.requests
                    found[name] = await drive(app, route, args.requests, args.concurrency, offset)
                    totals[name].nanoseconds.update(steps.nanoseconds)
                    totals[name].calls.update(steps.calls)
                print(f"{number + 1}. " + "   ".join(f"{k} {v:6.0f} µs" for k, v in found.items()), flush=True)
                results.append(found)
    figures: StepFigures = {}
    if args.steps:
        for name, total in totals.items():
            per_request = total.per_request(args.requests * args.rounds)
            print(request_steps.table(name, per_request))
            figures[name] = {step: round(us, 1) for step, (us, _calls) in per_request.items()}
    return results, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=float, default=0.1)
    parser.add_argument("--database-dsn", help="the shared state in PostgreSQL (a schema of its own, dropped after)")
    parser.add_argument("--steps", action="store_true", help="time each step of the hot paths (request_steps.py)")
    args = parser.parse_args()
    with installation(args.scale, args.database_dsn) as setup:
        results, steps = uvloop.run(measure(args, setup))

    def median(key: str) -> float:
        return statistics.median(r[key] for r in results)

    print(f"{args.concurrency} requests in flight, {args.requests} per route and round, {os.cpu_count()} cores")
    print("shared state: " + ("PostgreSQL (database_dsn)" if args.database_dsn else "SQLite and files"))
    figures = {
        "healthz_us": round(median("healthz")),
        "verify_us": round(median("verify")),
        "score_us": round(median("score")),
        "verify_ratio": round(median("verify") / median("healthz"), 2),
        "score_ratio": round(median("score") / median("healthz"), 2),
        "requests": args.requests,
        "concurrency": args.concurrency,
        "database": "postgresql" if args.database_dsn else "sqlite",
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    if steps:
        figures["steps_us"] = steps
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
