"""The consumer's check printed in docs/receipts.md runs, as written, against a live gateway."""

from __future__ import annotations

import contextlib
import io
import json
import re

import httpx2
import jwt
import pytest

from gateway.app import create_app
from gateway.services.audit_trail import make_checkpoint
from gateway.services.runtime import Runtime
from tests.api.test_trust_api import _with_result_route
from tests.conftest import REPO, Installation, serving


def _snippet() -> str:
    text = (REPO / "docs" / "receipts.md").read_text()
    found = re.search(r"<!-- consumer-check:start -->\n```python\n(.*?)```\n<!-- consumer-check:end -->", text, re.S)
    assert found, "docs/receipts.md lost its consumer check"
    return found.group(1)


def _run(base: str, token: str, receipt: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(_snippet(), "docs/receipts.md", "exec"), {"BASE": base, "TOKEN": token, "receipt": receipt})  # noqa: S102 - our own docs
    return out.getvalue()


def test_the_documented_consumer_check_passes_and_catches_a_forgery(installation: Installation) -> None:
    app = _with_result_route(create_app(installation.settings))
    rt: Runtime = app.state.runtime
    with serving(app) as base:
        secret = installation.credentials["demo-business"]
        form = {"grant_type": "client_credentials", "client_id": "demo-business", "client_secret": secret}
        token = httpx2.post(f"{base}/v1/token", data=form).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        receipt = httpx2.post(f"{base}/v1/test/echo", json={"q": 1}, headers=headers).json()["receipt"]
        make_checkpoint(rt.audit, rt.receipt_keys, issuer=rt.settings.issuer)
        assert "receipt verified and logged at position" in _run(base, token, receipt)

        header, payload, signature = receipt.split(".")
        claims = json.loads(jwt.utils.base64url_decode(payload))
        claims["result"]["answer"] = "no_match"
        forged = ".".join([header, jwt.utils.base64url_encode(json.dumps(claims).encode()).decode(), signature])
        with pytest.raises(jwt.InvalidSignatureError):
            _run(base, token, forged)
