"""Building a lookup index, or looking up in DuckDB, never holds up the event loop.

Measured by order, not by time: the index build waits until a `/healthz` sent during it has
been answered. Were the build on the event loop, `/healthz` could not be answered until the
build ended, and the build would give up waiting first.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2
import pytest

from gateway.app import create_app
from gateway.engine import Snapshot
from tests.conftest import Installation, bearer, serving
from tests.verify.conftest import enterprises


def _token(base: str, inst: Installation, who: str) -> str:
    form = {"grant_type": "client_credentials", "client_id": who, "client_secret": inst.credentials[who]}
    token: str = httpx2.post(f"{base}/v1/token", data=form).json()["access_token"]
    return token


@pytest.mark.parametrize(
    ("who", "url", "body"),
    [
        (
            "demo-business",
            "/v1/verify/enterprise-registration",
            lambda code: {
                "purpose": "credit_assessment",
                "claims": [{"keys": {"credit_code": code}, "checks": {"active": True}}],
            },
        ),
        (
            "demo-business",
            "/v1/models/enterprise-credit-risk/score",
            lambda code: {"purpose": "credit_assessment", "keys": [code]},
        ),
    ],
    ids=["verify", "score"],
)
def test_a_concurrent_request_is_answered_while_an_index_is_built(
    installation: Installation, monkeypatch: pytest.MonkeyPatch, who: str, url: str, body: Any
) -> None:
    app = create_app(installation.settings)
    building = threading.Event()
    answered = threading.Event()
    seen: list[bool] = []
    build = Snapshot.key_index

    def waiting_build(self: Snapshot, key_column: str, columns: Any) -> Any:
        building.set()
        seen.append(answered.wait(timeout=15))
        return build(self, key_column, columns)

    code = enterprises(installation)[0]["credit_code"]
    with serving(app) as base:
        token = _token(base, installation, who)
        app.state.runtime.domain.close()  # the indexes built at start are dropped: the next request builds
        monkeypatch.setattr(Snapshot, "key_index", waiting_build)
        with ThreadPoolExecutor(1) as pool:
            asked = pool.submit(httpx2.post, base + url, json=body(code), headers=bearer(token), timeout=30)
            assert building.wait(timeout=15)
            assert httpx2.get(f"{base}/healthz", timeout=30).status_code == 200
            answered.set()
            response = asked.result()
    assert response.status_code == 200, response.text
    assert seen and seen[0] is True  # /healthz was answered while the build was under way
