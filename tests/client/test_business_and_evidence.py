"""A bank's calls (verify, score) and the evidence every result carries: receipts checked against
pinned keys, forgeries refused, inclusion in the audit log proved, receipts saved and loaded,
keys pinned through rotation and refused when they change otherwise."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner
from veilgate_client import KeysChanged, NotIncluded, RateLimited, Receipt, ReceiptInvalid
from veilgate_client.errors import problem_from_response
from veilgate_client.evidence import KeyPin, b64url_decode, check_rotation

from gateway.cli import app as cli
from gateway.signing import KeyRing
from tests.client.conftest import Served


def _claim(served: Served, index: int = 0) -> dict[str, Any]:
    known = served.active_enterprise(index)
    return {"keys": {"credit_code": known["credit_code"]},
            "checks": {"legal_representative": known["legal_representative"], "active": True}}  # fmt: skip


def test_a_bank_verifies_a_batch_per_claim_with_rate_limits_and_a_checked_receipt(served: Served) -> None:
    with served.gateway("demo-business", "credit_assessment") as gw:
        wrong = {"keys": _claim(served, 1)["keys"], "checks": {"legal_representative": "X"}}
        invalid = {"keys": {"credit_code": "91110000MA00000008"}, "checks": {"active": True}}
        answers = gw.verify("enterprise-registration", [_claim(served), wrong, invalid])
        assert answers.results == ["match", "no_match", "invalid"]
        assert answers.answers[0]["fields"] == {"legal_representative": True, "active": True}
        table = answers.to_pandas()
        assert "credit_code" in table.loc[2, "error_field"] and list(table["claim"]) == [0, 1, 2]
        assert answers.rate_limit.policies["consumer"]["q"] > 0
        assert answers.rate_limit.remaining("consumer") is not None and answers.rate_limit.resets_in("consumer") >= 0
        assert answers.receipt.result == answers.result and answers.receipt.document["consumer"] == "demo-business"

        keys = _claim(served)["keys"]
        for guess in ("W", "X"):  # the demo allows 4 different questions about one enterprise a day
            gw.verify("enterprise-registration", {"keys": keys, "checks": {"legal_representative": guess}})
        with pytest.raises(RateLimited) as limited:
            gw.verify("enterprise-registration", {"keys": keys, "checks": {"legal_representative": "Y"}})
        assert limited.value.retry_after is not None and limited.value.retry_after > 0

        scored = gw.score("enterprise-credit-risk", [_claim(served, 2)["keys"]["credit_code"], "91110000MA00000008"])
        assert scored.results == ["scored", "invalid"] and scored.answers[0]["grade"] in "ABCD"
        assert scored.rate_limit.remaining("quota") is not None


def test_rate_limited_carries_retry_after() -> None:
    request = httpx.Request("POST", "http://gateway/v1/verify/x")
    problem = {"type": "https://veilgate.dev/problems/rate-limited", "status": 429, "detail": "consumer: limit"}
    response = httpx.Response(429, json=problem, headers={"Retry-After": "17", "X-Request-Id": "r1"}, request=request)
    error = problem_from_response(response)
    assert isinstance(error, RateLimited) and error.retry_after == 17 and error.request_id == "r1"


def test_a_body_that_differs_from_its_receipt_is_refused(served: Served) -> None:
    with served.gateway("demo-business", "credit_assessment") as gw:
        raw = gw.request("POST", "/v1/verify/enterprise-registration",
                         json={"purpose": "credit_assessment", "claims": [_claim(served)]}).json()  # fmt: skip
        gw.receipt_of(raw)
        changed = json.loads(json.dumps(raw))
        changed["result"]["answers"][0]["result"] = "no_match"
        with pytest.raises(ReceiptInvalid, match="differs"):
            gw.receipt_of(changed)
        header, payload, signature = raw["receipt"].split(".")
        forged_payload = json.loads(b64url_decode(payload))
        forged_payload["result"]["answers"][0]["result"] = "no_match"
        encoded = json.dumps(forged_payload).encode()
        forged = ".".join([header, base64.urlsafe_b64encode(encoded).rstrip(b"=").decode(), signature])
        with pytest.raises(ReceiptInvalid, match="signature"):
            gw.receipt_of({**forged_payload, "receipt": forged})
        none_alg = ".".join([base64.urlsafe_b64encode(b'{"alg":"none"}').decode().rstrip("="), payload, ""])
        with pytest.raises(ReceiptInvalid, match="EdDSA"):
            gw.receipt_of({**raw, "receipt": none_alg})
    with served.gateway("demo-researcher") as other, pytest.raises(ReceiptInvalid, match="issued to demo-business"):
        other.receipt_of(raw)


def test_inclusion_is_proved_against_a_signed_checkpoint_and_kept_with_the_saved_receipt(
    served: Served, tmp_path: Path
) -> None:
    with served.gateway("demo-business", "credit_assessment") as gw:
        answers = gw.verify("enterprise-registration", _claim(served))
        proof = answers.receipt.prove_inclusion(wait=10)
        assert proof.seq == answers.receipt.audit_seq and proof.size > proof.seq
        saved = answers.receipt.save(tmp_path / "receipt.json")
        jwks = gw.jwks()

        loaded = Receipt.load(saved, jwks=jwks)  # signature and kept proof re-checked offline
        assert loaded.document == answers.receipt.document and loaded.inclusion == proof
        assert Receipt.load(saved, gateway=gw).prove_inclusion().seq == proof.seq  # the pinned keys, then the log
        with pytest.raises(ValueError, match="jwks= or gateway="):
            Receipt.load(saved)  # never loaded unchecked

        kept = json.loads(saved.read_text())
        kept["inclusion"]["leaf"]["result_digest"] = "sha256:" + "0" * 64
        (tmp_path / "tampered.json").write_text(json.dumps(kept))
        with pytest.raises(NotIncluded, match="another result"):
            Receipt.load(tmp_path / "tampered.json", jwks=jwks)
        kept = json.loads(saved.read_text())
        kept["inclusion"]["audit_path"][0] = "00" * 32
        (tmp_path / "bad-path.json").write_text(json.dumps(kept))
        with pytest.raises(NotIncluded, match="not in the checkpointed tree"):
            Receipt.load(tmp_path / "bad-path.json", jwks=jwks)

        body = gw.request("POST", "/v1/verify/enterprise-registration",
                          json={"purpose": "credit_assessment", "claims": [_claim(served)]}).json()  # fmt: skip
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    (tmp_path / "body.json").write_text(json.dumps(body))
    runner = CliRunner()
    for file in ("receipt.json", "body.json"):
        result = runner.invoke(cli, ["receipt", "verify", str(tmp_path / file), "--jwks", str(tmp_path / "jwks.json")])
        assert result.exit_code == 0, result.output
        assert "valid receipt" in result.output
    body["result"]["answers"][0]["result"] = "no_match"
    (tmp_path / "edited.json").write_text(json.dumps(body))
    jwks_option = ["--jwks", str(tmp_path / "jwks.json")]
    edited = runner.invoke(cli, ["receipt", "verify", str(tmp_path / "edited.json"), *jwks_option])
    assert edited.exit_code == 1 and "differs from what its receipt signs" in edited.output
    assert Receipt.load(tmp_path / "body.json", jwks=jwks).request_id == body["request_id"]
    with pytest.raises(ReceiptInvalid, match="differs from what the receipt signs"):
        Receipt.load(tmp_path / "edited.json", jwks=jwks)


def test_keys_are_pinned_and_follow_a_rotation(fresh: Any) -> None:
    served = fresh()
    with served.gateway("demo-business", "credit_assessment") as gw:
        first = gw.verify("enterprise-registration", _claim(served)).receipt
        pinned = json.loads((served.pins / "demo-business.json").read_text())
        KeyRing.load(served.settings.receipt_keys_dir).rotate()
        second = gw.verify("enterprise-registration", _claim(served)).receipt  # unknown kid: refreshed, allowed
        kids = [k["kid"] for k in gw.jwks()["keys"]]
        assert len(kids) == 2 and {k["status"] for k in gw.jwks()["keys"]} == {"active", "retired"}
        assert pinned["keys"][0]["kid"] in kids and second.jws.split(".")[0] != first.jws.split(".")[0]
        first.verify(gw.jwks())  # a retired key's receipt still verifies


def test_key_changes_outside_the_rotation_rules_are_refused(tmp_path: Path) -> None:
    ring = KeyRing.create(tmp_path / "keys")
    before = ring.jwks()
    published = [before]
    pin = KeyPin(lambda: published[-1], tmp_path / "pin.json")
    pin.keys()
    assert json.loads((tmp_path / "pin.json").read_text()) == before

    other = KeyRing.create(tmp_path / "other").jwks()
    for changed, why in (
        ({"keys": other["keys"]}, "no longer published"),
        ({"keys": [{**before["keys"][0], "status": "revoked", "revoked_since": "2026-01-01T00:00:00+00:00"}]}, None),
    ):
        published.append(changed)
        if why is None:
            pin.refresh()  # revocation is a rotation rule
            continue
        with pytest.raises(KeysChanged, match=why):
            pin.refresh()
    revoked = pin.keys()
    with pytest.raises(KeysChanged, match="back to active"):
        check_rotation(revoked, before)
    relabelled = {"keys": [{**before["keys"][0], "x": other["keys"][0]["x"]}]}
    with pytest.raises(KeysChanged, match="other key material"):
        check_rotation(before, relabelled)
    published.append(relabelled)
    with pytest.raises(ReceiptInvalid, match="thumbprint"):
        pin.refresh()
