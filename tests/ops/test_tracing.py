"""Tracing: off by default (OpenTelemetry not imported, no middleware); on, one span per request
with the route template and the status, never the raw path."""

from __future__ import annotations

import subprocess
import sys

from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.app import create_app
from gateway.observability.tracing import RequestSpans
from tests.conftest import CANARY, Installation


def test_off_no_span_middleware_and_no_span_even_with_a_tracer_provider(installation: Installation) -> None:
    """Off: no span middleware, and none of FastAPI's own spans (which would hold the raw path),
    even where the process has a tracer provider (`opentelemetry-instrument`, say)."""
    config = installation.root / "veilgate.toml"
    script = f"""
from pathlib import Path
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from gateway.app import create_app
from gateway.observability.tracing import RequestSpans
from gateway.settings import load_settings
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
settings = load_settings(Path({str(config)!r}))
assert not settings.tracing
app = create_app(settings)
assert not [m for m in app.user_middleware if m.cls is RequestSpans], "a span middleware"
with TestClient(app) as client:
    client.get("/v1/catalog/{CANARY}?key={CANARY}")
assert exporter.get_finished_spans() == (), [s.name for s in exporter.get_finished_spans()]
settings = settings.model_copy(update={{"tracing": True}})
with TestClient(create_app(settings)) as client:
    client.get("/v1/catalog/{CANARY}?key={CANARY}")
spans = exporter.get_finished_spans()
assert [s.name for s in spans] == ["GET /v1/catalog/{{dataset}}"], [s.name for s in spans]
assert "{CANARY}" not in repr([dict(s.attributes or {{}}) for s in spans])
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def test_on_every_request_is_one_span_without_the_raw_path(installation: Installation) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = installation.settings.model_copy(update={"tracing": True})
    app = create_app(settings)
    assert [m for m in app.user_middleware if m.cls is RequestSpans]
    app.user_middleware = [m for m in app.user_middleware if m.cls is not RequestSpans]
    app.add_middleware(RequestSpans, tracer_provider=provider)
    with TestClient(app) as client:
        found = client.get("/v1/catalog/enterprise_registry")
        missing = client.get(f"/v1/catalog/{CANARY}?key={CANARY}")
        nowhere = client.get(f"/{CANARY}")
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == [
        "GET /v1/catalog/{dataset}",
        "GET /v1/catalog/{dataset}",
        "GET (unmatched)",
    ]
    statuses = [s.attributes["http.response.status_code"] for s in spans]  # type: ignore[index]
    assert statuses == [found.status_code, missing.status_code, nowhere.status_code] == [200, 422, 404]
    assert [s.attributes["veilgate.request_id"] for s in spans] == [  # type: ignore[index]
        r.headers["x-request-id"] for r in (found, missing, nowhere)
    ]
    assert CANARY not in repr([(s.name, dict(s.attributes or {})) for s in spans])
