"""Logs as JSON lines: one event a line, the request id on what a request logs, nothing a
caller sent; `veilgate serve` with log_format = "json" writes nothing else."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

import httpx2
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.observability.logs import JsonLines
from tests.conftest import CANARY, Installation, free_port, wait_until_up


def test_a_record_is_one_json_line() -> None:
    try:
        raise ValueError("first line\nsecond line")
    except ValueError as exc:
        record = logging.LogRecord(
            "veilgate", logging.ERROR, __file__, 1, "went\nwrong: %s", ("x",), (ValueError, exc, None)
        )
    line = JsonLines().format(record)
    assert "\n" not in line
    event = json.loads(line)
    assert event["message"] == "went\nwrong: x"
    assert event["level"] == "error"
    assert "second line" in event["exception"]
    assert "request_id" not in event


def test_what_a_request_logs_carries_its_request_id(installation: Installation) -> None:
    app = create_app(installation.settings)

    @app.get("/test-only/fails")
    def fails() -> None:
        raise RuntimeError("a bug")

    lines: list[str] = []
    handler = logging.Handler()
    handler.setFormatter(JsonLines())
    handler.emit = lambda record: lines.append(handler.format(record))  # type: ignore[method-assign]
    logging.getLogger().addHandler(handler)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            response = client.get("/test-only/fails")
    finally:
        logging.getLogger().removeHandler(handler)
    assert response.status_code == 500
    events = [json.loads(line) for line in lines]
    failed = [e for e in events if "unexpected RuntimeError" in e["message"]]
    assert len(failed) == 1
    assert failed[0]["request_id"] == response.headers["x-request-id"]


def test_serve_with_json_logs_writes_json_lines_only_and_no_caller_values(installation: Installation) -> None:
    port = free_port()
    env = {**os.environ, "VEILGATE_LOG_FORMAT": "json"}
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(installation.root / "veilgate.toml"),
         "--port", str(port), "--workers", "2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base, process)
        with httpx2.Client(base_url=base, timeout=10) as client:
            client.get(f"/v1/catalog/{CANARY}?key={CANARY}")
            client.post(
                "/v1/token", data={"grant_type": "client_credentials", "client_id": CANARY, "client_secret": CANARY}
            )
            client.post("/v1/verify/enterprise-registration", headers={"Authorization": f"Bearer {CANARY}"})
            client.get(f"/{CANARY}")
        time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert process.stderr is not None
    output = process.stderr.read().decode()
    process.stderr.close()
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines, "serve logged nothing at all"
    events = [json.loads(line) for line in lines]  # every line is one JSON event
    assert all({"time", "level", "logger", "message"} <= set(e) for e in events)
    assert any("Started server process" in e["message"] for e in events)
    assert CANARY not in output
