"""What durable auditing costs: group commit against one commit per leaf, and an audited request
against an unaudited one, in the same process.

Every leaf is fsynced before its response leaves. Alone, that is one fsync per request; the
audit log's writer thread groups whatever is waiting into one transaction, so concurrent
requests share fsyncs. Part 1 appends the same events one at a time (each waits for its own
commit: the baseline) and from many threads at once. Part 2 serves a trivial route over ASGI
with auditing (a durable leaf per request) and the unaudited health probe as the baseline.

    python benchmarks/audit_log.py [--events 2000] [--requests 3000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
from fastapi import FastAPI

from gateway.app import create_app
from gateway.domain.trail import AuditEvent, Decision, utc_now
from gateway.services import demo_setup
from gateway.state.audit_sqlite import SqliteAuditLog


def _event(n: int) -> AuditEvent:
    return AuditEvent(
        time=utc_now(),
        request_id=f"{n:032x}",
        principal="demo-business",
        method="GET",
        route="/v1/catalog",
        decision=Decision.ALLOWED,
        status=200,
    )


def appends(root: Path, events: int, concurrency: int) -> None:
    log = SqliteAuditLog.open(root / "sequential")
    started = time.perf_counter()
    for n in range(events):
        log.append_now(_event(n))
    sequential = events / (time.perf_counter() - started)
    log.close()

    log = SqliteAuditLog.open(root / "grouped")
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(lambda n: log.append_now(_event(n)), range(events)))
    grouped = events / (time.perf_counter() - started)
    log.close()
    print(f"appends, one commit each (baseline): {sequential:8.0f} leaves/s")
    ratio = grouped / sequential
    print(f"appends, {concurrency} concurrent (group commit): {grouped:8.0f} leaves/s  ratio {ratio:.1f}x")


async def _throughput(app: FastAPI, path: str, requests: int, concurrency: int) -> float:
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://bench") as client:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in range(requests):
            queue.put_nowait(n)

        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                response = await client.get(path)
                assert response.status_code == 200, response.text

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return requests / (time.perf_counter() - started)


def requests_audited(root: Path, requests: int, concurrency: int) -> None:
    setup = demo_setup.setup(root / "demo", Path(__file__).resolve().parent.parent / "policies", scale=0.01)
    app = create_app(setup.settings)

    @app.get("/bench/trivial")
    def trivial() -> dict[str, str]:
        return {"status": "ok"}

    async def run() -> tuple[float, float]:
        await _throughput(app, "/healthz", 200, concurrency)  # warm up
        bare = await _throughput(app, "/healthz", requests, concurrency)
        audited = await _throughput(app, "/bench/trivial", requests, concurrency)
        return bare, audited

    bare, audited = asyncio.run(run())
    app.state.runtime.close()
    print(f"requests, unaudited probe (baseline): {bare:8.0f} req/s")
    print(f"requests, audited, durable leaf each: {audited:8.0f} req/s  ratio {audited / bare:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        appends(Path(tmp), args.events, args.concurrency)
        requests_audited(Path(tmp), args.requests, args.concurrency)


if __name__ == "__main__":
    main()
