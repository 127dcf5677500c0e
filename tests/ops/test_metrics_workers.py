"""`veilgate serve --workers 2`: a scrape of either worker counts the requests of both."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx2
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Installation, free_port, wait_until_up


def healthz_count(text: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "veilgate_http_requests_total" and sample.labels.get("route") == "/healthz":
                return sample.value
    return 0.0


def test_every_scrape_sums_the_workers(installation: Installation) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(installation.root / "veilgate.toml"),
         "--port", str(port), "--workers", "2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base, process)
        with httpx2.Client(base_url=base, timeout=10) as client:
            secret = installation.credentials["demo-auditor"]
            form = {"grant_type": "client_credentials", "client_id": "demo-auditor", "client_secret": secret}
            token = client.post("/v1/token", data=form).json()["access_token"]

            def scrape() -> str:
                # A new connection each time, so that scrapes land on either worker.
                response = httpx2.get(f"{base}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
                assert response.status_code == 200, response.text
                return response.text

            start = healthz_count(scrape())
            for _ in range(40):
                assert httpx2.get(f"{base}/healthz", timeout=10).status_code == 200
            counts = {healthz_count(scrape()) - start for _ in range(8)}
        assert counts == {40}, "some scrape saw one worker's requests only"
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stderr:
            process.stderr.close()
