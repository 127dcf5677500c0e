"""deploy/local-topology: two replicas on PostgreSQL behind nginx, from the deployment's nginx
template and settings. Through the proxy: a verification, a release, a freeze and a key
rotation; then each replica, asked directly, shows it saw every one of them."""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx2
import pytest

from tests.conftest import PG_DSN, REPO, Installation, pg_schema
from tests.verify.conftest import SERVICE, enterprises


def _load_topology() -> ModuleType:
    spec = importlib.util.spec_from_file_location("local_topology", REPO / "deploy" / "local_topology.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["local_topology"] = module
    spec.loader.exec_module(module)
    return module


topology = _load_topology()
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(PG_DSN is None, reason="set VEILGATE_TEST_PG_DSN to run against PostgreSQL"),
    pytest.mark.skipif(topology.find_nginx() is None, reason="nginx is not installed (apt-get install nginx)"),
]


def kid_of(receipt: str) -> str:
    header = receipt.split(".", 1)[0]
    kid: str = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"]
    return kid


def eventually(check: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not seen in time"
        time.sleep(0.05)


@pytest.fixture
def running(installation: Installation, tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    state = tmp_path / "state"
    # A new installation on PostgreSQL: the audit trail of the files is left out (one with a
    # trail of its own would not start: `veilgate database import` moves it).
    shutil.copytree(installation.settings.state_dir, state, ignore=shutil.ignore_patterns("log.sqlite3*"))
    config = tmp_path / "veilgate.toml"
    config.write_text(f'state_dir = "{state}"\npolicy_dir = "{installation.settings.policy_dir}"\n')
    with pg_schema() as schema, topology.running(config, str(PG_DSN), schema=schema, workdir=tmp_path / "run") as up:
        yield up, config


def test_verification_release_freeze_and_rotation_through_the_proxy_reach_both_replicas(
    running: tuple[Any, Path], installation: Installation
) -> None:
    up, config = running
    with httpx2.Client(base_url=up.proxy, timeout=30) as proxy:
        through_the_proxy(up, config, proxy, installation)


def through_the_proxy(up: Any, config: Path, proxy: httpx2.Client, installation: Installation) -> None:

    def token(who: str, base: str = up.proxy) -> dict[str, str]:
        form = {"grant_type": "client_credentials", "client_id": who, "client_secret": installation.credentials[who]}
        response = httpx2.post(f"{base}/v1/token", data=form, timeout=30)
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    bank, researcher, admin = token("demo-business"), token("demo-researcher"), token("demo-admin")
    row = enterprises(installation, 3)[1]
    asked = {"keys": {"credit_code": row["credit_code"]}, "checks": {"active": True}}
    claim = {"purpose": "credit_assessment", "claims": [asked]}

    # A verification and a release, through the proxy.
    verified = proxy.post(f"/v1/verify/{SERVICE}", json=claim, headers=bank)
    assert verified.status_code == 200, verified.text
    question = {"purpose": "public_research", "parameters": {"group_by": ["region"]}, "epsilon": "1"}
    released = proxy.post("/v1/aggregate/wage-base-mean", json=question, headers=researcher)
    assert released.status_code == 200, released.text
    for base in up.replicas:  # each replica finds both leaves in the one audit log
        auditor = token("demo-auditor", base)
        for answer in (verified, released):
            leaf = httpx2.get(f"{base}/v1/audit/leaves/{answer.json()['audit_seq']}", headers=auditor, timeout=30)
            assert leaf.status_code == 200, leaf.text
            assert leaf.json()["request_id"] == answer.json()["request_id"]
        budget = httpx2.get(f"{base}/v1/budget", headers=token("demo-researcher", base), timeout=30)
        assert budget.status_code == 200 and "1" in json.dumps(budget.json())
    # nginx took turns: the verification and the release, one after the other through the proxy,
    # were served by different replicas, as each one's own /metrics shows.
    served = []
    for base in up.replicas:
        scraped = httpx2.get(f"{base}/metrics", headers=token("demo-auditor", base), timeout=30).text
        served.append({r for r in ("/v1/verify/{service}", "/v1/aggregate/{template}") if f'route="{r}"' in scraped})
    assert sorted(map(len, served)) == [1, 1] and served[0] != served[1], served
    assert proxy.get("/metrics", headers=token("demo-auditor")).status_code == 404  # not through the proxy

    # A key rotation (on the shared key ring, as operators do it): both replicas sign with the new key.
    old = kid_of(verified.json()["receipt"])
    rotated = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "keys", "rotate", "--config", str(config), "--purpose", "receipt"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    new = rotated.stdout.strip().rsplit(" ", 1)[-1]
    assert new != old
    for base in up.replicas:
        again = httpx2.post(f"{base}/v1/verify/{SERVICE}", json=claim, headers=bank, timeout=30)
        assert again.status_code == 200, again.text
        assert kid_of(again.json()["receipt"]) == new
        published = {k["kid"] for k in httpx2.get(f"{base}/.well-known/jwks.json", timeout=30).json()["keys"]}
        assert {old, new} <= published
    assert kid_of(proxy.post(f"/v1/verify/{SERVICE}", json=claim, headers=bank).json()["receipt"]) == new

    # A freeze through the proxy stops the consumer on both replicas.
    body = {"kind": "consumer", "name": "demo-business", "reason": "incident"}
    assert proxy.post("/v1/admin/freeze", json=body, headers=admin).status_code == 201
    for base in up.replicas:

        def stopped(base: str = base) -> bool:
            answer = httpx2.post(f"{base}/v1/verify/{SERVICE}", json=claim, headers=bank, timeout=30)
            return answer.status_code == 403 and answer.json()["type"].endswith("/frozen")

        eventually(stopped)

    # A console form through the proxy: the browser's Origin carries the proxy's port, which the
    # gateway must see in Host (nginx passes $http_host, not $host) or every console write is refused.
    console_write_through_the_proxy(proxy, installation)


def console_write_through_the_proxy(proxy: httpx2.Client, installation: Installation) -> None:
    origin = {"Origin": str(proxy.base_url).rstrip("/"), "Sec-Fetch-Site": "same-origin"}
    form = proxy.get("/console/login")
    login_csrf = re.search(r'name="login_csrf" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
    account = {"client_id": "demo-researcher", "client_secret": installation.credentials["demo-researcher"]}
    logged = proxy.post(
        "/console/login", headers=origin, data={**account, "login_csrf": login_csrf}, follow_redirects=False
    )
    assert logged.status_code == 303, logged.text
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', proxy.get("/console/objections").text).group(1)  # type: ignore[union-attr]
    objection = {"about": "dataset", "subject": "enterprise_registry", "text": "through the proxy", "csrf": csrf}
    filed = proxy.post("/console/objections", data=objection, headers=origin, follow_redirects=False)
    assert filed.status_code == 303, filed.text
