"""What counting a request costs: the metrics middleware around a bare ASGI app, against the bare
app, in the same run (and a span per request, when the OpenTelemetry SDK is installed).

    python benchmarks/observability.py [--requests N] [--rounds R]

Calls the ASGI callables directly on one event loop (no HTTP), so the figure is the middleware's
own CPU per request; prints the medians of R rounds and ends with one JSON line
(`bare_us`, `metrics_us`, `metrics_added_us`, `ratio`, `spans_added_us`, `scrape_ms`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from dataclasses import dataclass
from typing import Any

from gateway.observability import metrics
from gateway.observability.requests import RequestMetrics


@dataclass(frozen=True)
class _Route:
    path: str = "/v1/verify/{service}"


async def bare(scope: dict[str, Any], receive: Any, send: Any) -> None:
    scope["route"] = _Route()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def _drive(app: Any, requests: int) -> float:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_message: dict[str, Any]) -> None:
        return None

    started = time.perf_counter()
    for _ in range(requests):
        await app({"type": "http", "method": "POST", "path": "/v1/verify/x", "state": {}}, receive, send)
    return (time.perf_counter() - started) / requests * 1e6


def _spans_app() -> Any | None:
    try:
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415

        from gateway.observability.tracing import RequestSpans  # noqa: PLC0415
    except ImportError:
        return None
    return RequestSpans(bare, tracer_provider=TracerProvider())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    counted, spans = RequestMetrics(bare), _spans_app()
    rounds: list[tuple[float, float, float | None]] = []
    for number in range(args.rounds):
        b = asyncio.run(_drive(bare, args.requests))
        m = asyncio.run(_drive(counted, args.requests))
        s = asyncio.run(_drive(spans, args.requests)) if spans is not None else None
        rounds.append((b, m, s))
        print(
            f"round {number + 1}: bare {b:.2f} µs, with metrics {m:.2f} µs" + (f", with a span {s:.2f} µs" if s else "")
        )
    bare_us = statistics.median(r[0] for r in rounds)
    metrics_us = statistics.median(r[1] for r in rounds)
    span_rounds = [r[2] for r in rounds if r[2] is not None]
    started = time.perf_counter()
    for _ in range(20):
        metrics.exposition()
    scrape_ms = (time.perf_counter() - started) / 20 * 1e3
    result = {
        "requests": args.requests,
        "bare_us": round(bare_us, 2),
        "metrics_us": round(metrics_us, 2),
        "metrics_added_us": round(metrics_us - bare_us, 2),
        "ratio": round(metrics_us / bare_us, 2),
        "spans_added_us": round(statistics.median(span_rounds) - bare_us, 2) if span_rounds else None,
        "scrape_ms": round(scrape_ms, 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
