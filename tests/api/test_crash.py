"""Kill -9 a gateway under concurrent load: afterwards the log verifies, and every response a
client received has its leaf (a record is durable before its response leaves)."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx2

from gateway.services.audit_trail import verify_log
from gateway.signing import KeyRing
from gateway.state.audit_sqlite import SqliteAuditLog
from gateway.state.ports import LeafFilter
from tests.conftest import Installation, serve_process

CLIENTS = 8
RESPONSES_BEFORE_KILL = 300


def test_sigkill_under_load_loses_no_acknowledged_record(installation: Installation) -> None:
    with serve_process(installation.root / "veilgate.toml", VEILGATE_CHECKPOINT_INTERVAL_SECONDS="1") as (
        base,
        server,
    ):
        secret = installation.credentials["demo-business"]
        token = httpx2.post(
            f"{base}/v1/token",
            data={"grant_type": "client_credentials", "client_id": "demo-business", "client_secret": secret},
        ).json()["access_token"]
        acknowledged: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()

        def load(worker: int) -> None:
            paths = ["/v1/me", "/v1/catalog", "/v1/catalog/no_such_dataset", "/v1/admin/datasets"]
            with httpx2.Client(base_url=base, timeout=5) as client:
                n = worker
                while not stop.is_set():
                    try:
                        response = client.get(paths[n % len(paths)], headers={"Authorization": f"Bearer {token}"})
                        response.read()
                    except httpx2.TransportError:
                        return  # the server is gone
                    with lock:
                        acknowledged.append(response.headers["x-request-id"])
                    n += 1

        workers = [threading.Thread(target=load, args=(i,)) for i in range(CLIENTS)]
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + 60
        while len(acknowledged) < RESPONSES_BEFORE_KILL and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(1.2)  # let a checkpoint be signed under load
        os.kill(server.pid, signal.SIGKILL)  # mid-flight: requests are in every stage
        server.wait(timeout=10)
        stop.set()
        for worker in workers:
            worker.join(timeout=10)

    assert len(acknowledged) >= RESPONSES_BEFORE_KILL
    log = SqliteAuditLog.open(installation.settings.audit_dir)
    try:
        report = verify_log(log, KeyRing.load(installation.settings.receipt_keys_dir).jwks())
        assert report.ok, report.failure
        assert report.checkpoints >= 1
        logged = {leaf.request_id for leaf in log.find(LeafFilter(), limit=1_000_000)}
    finally:
        log.close()
    missing = [rid for rid in acknowledged if rid not in logged]
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged responses have no leaf"
