"""The client against a gateway that lies or breaks: a real gateway behind a transport that rewrites
its answers (as a compromised server or a broken proxy would). Each case must raise a typed error
and return nothing: a receipt by a key the gateway does not publish, a JWKS that drops the pinned
key, an edited document, a checkpoint that does not hold the leaf, a 500 or garbage."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from veilgate_client import (
    BadResponse,
    Gateway,
    KeysChanged,
    NotIncluded,
    NotYetCheckpointed,
    ReceiptInvalid,
    ServerError,
    Unavailable,
    Unreachable,
)
from veilgate_client.evidence import CHECKPOINT_TYPE, RECEIPT_TYPE, b64url_decode, verify_checkpoint

from gateway.signing import KeyRing
from tests.client.conftest import Served
from tests.conftest import free_port

VERIFY = "/v1/verify/enterprise-registration"
JWKS = "/.well-known/jwks.json"
Rule = Callable[[httpx.Response], httpx.Response]


class _Hostile(httpx.BaseTransport):
    """Passes every request to the real gateway, then rewrites the answers of the paths in `rules`."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.rules: dict[str, Rule] = {}
        self.seen: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request.url.path)
        response = self.inner.handle_request(request)
        rule = self.rules.get(request.url.path)
        if rule is None:
            return response
        response.read()
        response.close()
        return rule(response)

    def close(self) -> None:
        self.inner.close()


def _json(rewrite: Callable[[Any], Any], status: int | None = None) -> Rule:
    def rule(response: httpx.Response) -> httpx.Response:
        headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-encoding")}
        return httpx.Response(status or response.status_code, headers=headers, json=rewrite(response.json()))

    return rule


def _raw(status: int, content: bytes, content_type: str = "text/html") -> Rule:
    return lambda _response: httpx.Response(status, content=content, headers={"Content-Type": content_type})


def _claim(served: Served) -> dict[str, Any]:
    known = served.active_enterprise(7)
    return {"keys": {"credit_code": known["credit_code"]}, "checks": {"active": True}}


@pytest.fixture
def hostile(served: Served, tmp_path: Path) -> Iterator[tuple[Gateway, _Hostile, Path]]:
    """A bank's client through the rewriting transport, its keys pinned by one honest answer first."""
    transport = _Hostile()
    pin = tmp_path / "pin.json"
    with served.gateway("demo-business", "credit_assessment", transport=transport, pin_file=pin) as gw:
        gw.verify("enterprise-registration", _claim(served))
        assert pin.is_file()
        yield gw, transport, pin


def _resigned(ring: KeyRing, edit: Callable[[dict[str, Any]], None] = lambda _d: None) -> Callable[[Any], Any]:
    """A body re-signed by `ring` (a key of the attacker's), after `edit` changed its document."""

    def rewrite(body: dict[str, Any]) -> dict[str, Any]:
        document = {k: v for k, v in body.items() if k != "receipt"}
        edit(document)
        return {**document, "receipt": ring.sign_document(json.dumps(document).encode(), typ=RECEIPT_TYPE)}

    return rewrite


def _no_match(document: dict[str, Any]) -> None:
    document["result"]["answers"][0]["result"] = "no_match"


def test_a_receipt_by_a_key_the_gateway_does_not_publish_is_refused(
    served: Served, hostile: tuple[Gateway, _Hostile, Path], tmp_path: Path
) -> None:
    gw, transport, pin = hostile
    pinned = pin.read_text()
    transport.rules[VERIFY] = _json(_resigned(KeyRing.create(tmp_path / "attacker"), _no_match))
    before = transport.seen.count(JWKS)
    with pytest.raises(ReceiptInvalid, match="not published"):
        gw.verify("enterprise-registration", _claim(served))
    assert transport.seen.count(JWKS) == before + 1  # the unknown kid made it look once more, in vain
    assert pin.read_text() == pinned


def test_a_jwks_that_drops_the_pinned_key_is_refused_and_the_pin_is_kept(
    served: Served, hostile: tuple[Gateway, _Hostile, Path], tmp_path: Path
) -> None:
    gw, transport, pin = hostile
    pinned = json.loads(pin.read_text())
    attacker = KeyRing.create(tmp_path / "attacker")
    transport.rules[VERIFY] = _json(_resigned(attacker, _no_match))
    transport.rules[JWKS] = _json(lambda _jwks: attacker.jwks())  # the pinned key swapped for the attacker's
    with pytest.raises(KeysChanged, match="no longer published"):
        gw.verify("enterprise-registration", _claim(served))
    transport.rules[JWKS] = _json(lambda jwks: {"keys": jwks["keys"] + attacker.jwks()["keys"]})  # two active keys
    with pytest.raises(KeysChanged, match="more than one active key"):
        gw.verify("enterprise-registration", _claim(served))
    assert json.loads(pin.read_text()) == pinned and gw.jwks() == pinned


def test_an_edited_document_or_payload_is_refused(served: Served, hostile: tuple[Gateway, _Hostile, Path]) -> None:
    gw, transport, _pin = hostile

    def edited_body(body: dict[str, Any]) -> dict[str, Any]:
        _no_match(body)
        return body

    def edited_payload(body: dict[str, Any]) -> dict[str, Any]:
        header, payload, signature = body["receipt"].split(".")
        document = json.loads(b64url_decode(payload))
        _no_match(document)
        _no_match(body)
        forged = base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()
        return {**body, "receipt": f"{header}.{forged}.{signature}"}

    for rewrite, why in ((edited_body, "differs"), (edited_payload, "signature")):
        transport.rules[VERIFY] = _json(rewrite)
        with pytest.raises(ReceiptInvalid, match=why):
            gw.verify("enterprise-registration", _claim(served))


def test_a_checkpoint_that_does_not_hold_the_leaf_is_refused(
    served: Served, hostile: tuple[Gateway, _Hostile, Path], tmp_path: Path
) -> None:
    gw, transport, _pin = hostile
    receipt = gw.verify("enterprise-registration", _claim(served)).receipt
    receipt.prove_inclusion(wait=15)  # honest: proved
    leaf_path = f"/v1/audit/leaves/{receipt.audit_seq}"

    def flip_first(proof: dict[str, Any]) -> dict[str, Any]:
        first = proof["audit_path"][0]
        return {**proof, "audit_path": [("1" if first[0] == "0" else "0") + first[1:], *proof["audit_path"][1:]]}

    cases: list[tuple[str, Rule, type[Exception], str]] = [
        ("/v1/audit/proof/inclusion", _json(flip_first), NotIncluded, "not in the checkpointed tree"),
        ("/v1/audit/proof/inclusion", _json(lambda p: {**p, "audit_path": p["audit_path"][:-1]}), NotIncluded, "short"),
        ("/v1/audit/proof/inclusion", _json(lambda p: {**p, "audit_path": ["zz"]}), NotIncluded, "hex"),
        ("/v1/audit/proof/inclusion", _raw(200, b"<html>proxy</html>"), BadResponse, "not JSON"),
        (leaf_path, _json(lambda leaf: {**leaf, "result_digest": "sha256:" + "0" * 64}), NotIncluded, "another"),
        (leaf_path, _json(lambda leaf: {**leaf, "seq": leaf["seq"] - 1}), NotIncluded, "another request"),
        ("/v1/audit/checkpoints", _json(lambda _c: {"checkpoints": []}), NotYetCheckpointed, "no signed"),
        ("/v1/audit/checkpoints", _json(lambda _c: {"checkpoints": "x"}), BadResponse, "not a list"),
    ]
    attacker = KeyRing.create(tmp_path / "attacker")

    def forged_head(listed: dict[str, Any]) -> dict[str, Any]:
        head = json.loads(b64url_decode(listed["checkpoints"][0]["jws"].split(".")[1]))
        token = attacker.sign_document(json.dumps(head).encode(), typ=CHECKPOINT_TYPE)
        return {"checkpoints": [{**listed["checkpoints"][0], "jws": token}]}

    cases.append(("/v1/audit/checkpoints", _json(forged_head), ReceiptInvalid, "not published"))
    for path, rule, error, why in cases:
        transport.rules = {path: rule}
        receipt.inclusion = None
        with pytest.raises(error, match=why):
            receipt.prove_inclusion()
        assert receipt.inclusion is None, path


@pytest.mark.parametrize(
    ("rule", "error", "why"),
    [
        (_raw(500, b"<html>Internal Server Error</html>"), ServerError, "Internal Server Error"),
        (_raw(502, b""), ServerError, "502"),
        (_raw(200, b"<html>a captive portal</html>"), BadResponse, "not a JSON object"),
        (_raw(200, b'{"result": {"answers": [', "application/json"), BadResponse, "not a JSON object"),
        (_raw(200, b"[1, 2]", "application/json"), BadResponse, "not a JSON object"),
        (_json(lambda body: {k: v for k, v in body.items() if k != "receipt"}), ReceiptInvalid, "no receipt"),
        (_json(lambda body: {**body, "receipt": "a.b.c"}), ReceiptInvalid, "malformed"),
    ],
    ids=["500-html", "502-empty", "200-html", "200-truncated", "200-list", "no-receipt", "garbage-receipt"],
)
def test_a_broken_answer_raises_a_typed_error_and_is_not_retried(
    served: Served, hostile: tuple[Gateway, _Hostile, Path], rule: Rule, error: type[Exception], why: str
) -> None:
    gw, transport, _pin = hostile
    transport.rules[VERIFY] = rule
    before = transport.seen.count(VERIFY)
    with pytest.raises(error, match=why):
        gw.verify("enterprise-registration", _claim(served))
    assert transport.seen.count(VERIFY) == before + 1


def test_a_release_is_retried_on_503_only_and_then_raises(served: Served, tmp_path: Path) -> None:
    transport = _Hostile()
    path = "/v1/aggregate/insured-persons"
    unavailable = {"type": "https://veilgate.dev/problems/audit-unavailable", "status": 503, "detail": "audit log"}
    transport.rules[path] = _raw(503, json.dumps(unavailable).encode(), "application/problem+json")
    with served.gateway("demo-researcher", "public_research", transport=transport, pin_file=False, max_retries=2) as gw:
        with pytest.raises(Unavailable, match="audit log"):
            gw.release("insured-persons")
        assert transport.seen.count(path) == 3
        transport.rules[path] = _raw(500, b"oops")
        with pytest.raises(ServerError):
            gw.release("insured-persons")
        assert transport.seen.count(path) == 4


def test_broken_keys_tokens_and_connections_raise_typed_errors(served: Served, tmp_path: Path) -> None:
    for rule, error, why in (
        (_raw(200, b"<html></html>"), BadResponse, "not JSON"),
        (_json(lambda _jwks: {"keys": "none"}), KeysChanged, "no `keys` list"),
        (_json(lambda _jwks: {"keys": [1]}), KeysChanged, "not a key"),
    ):
        transport = _Hostile()
        transport.rules[JWKS] = rule
        gw = served.gateway("demo-business", "credit_assessment", transport=transport, pin_file=tmp_path / "p.json")
        with gw, pytest.raises(error, match=why):
            gw.verify("enterprise-registration", _claim(served))
        assert not (tmp_path / "p.json").exists()
    (tmp_path / "p.json").write_text("{not json")
    corrupt = served.gateway("demo-business", "credit_assessment", pin_file=tmp_path / "p.json")
    with corrupt, pytest.raises(KeysChanged, match="unreadable"):
        corrupt.verify("enterprise-registration", _claim(served))
    transport = _Hostile()
    transport.rules["/v1/token"] = _json(lambda token: {**token, "access_token": None})
    with served.gateway("demo-business", transport=transport, pin_file=False) as gw, pytest.raises(BadResponse):
        gw.me()
    nowhere = Gateway(f"http://127.0.0.1:{free_port()}", "demo-business", "x", pin_file=False)
    with nowhere, pytest.raises(Unreachable, match="ConnectError"):
        nowhere.me()


def test_a_revoked_key_with_an_unreadable_time_trusts_nothing(tmp_path: Path) -> None:
    ring = KeyRing.create(tmp_path / "keys")
    key = ring.jwks()["keys"][0]

    def head(time: str) -> str:
        document = {"iss": "veilgate", "size": 3, "root": "00" * 32, "time": time}
        return ring.sign_document(json.dumps(document).encode(), typ=CHECKPOINT_TYPE)

    revoked = {"keys": [{**key, "status": "revoked", "revoked_since": "2100-01-01T00:00:00+00:00"}]}
    assert verify_checkpoint(head("2026-01-01T00:00:00Z"), revoked)["size"] == 3  # signed before the revocation
    with pytest.raises(ReceiptInvalid, match="revoked"):
        verify_checkpoint(head("yesterday"), revoked)  # an unreadable time counts as after it
    unreadable = {"keys": [{**key, "status": "revoked", "revoked_since": "soon"}]}
    with pytest.raises(ReceiptInvalid, match="revoked"):
        verify_checkpoint(head("2026-01-01T00:00:00Z"), unreadable)


def test_a_genuine_receipt_of_another_call_is_refused(served: Served, hostile: tuple[Gateway, _Hostile, Path]) -> None:
    gw, transport, _pin = hostile
    code = _claim(served)["keys"]["credit_code"]
    scored = gw.request("POST", "/v1/models/enterprise-credit-risk/score",
                        json={"purpose": "credit_assessment", "keys": [code]}).json()  # fmt: skip
    one = gw.request("POST", VERIFY, json={"purpose": "credit_assessment", "claims": [_claim(served)]}).json()
    transport.rules[VERIFY] = _json(lambda _body: scored)  # signed, for this client, but for another service
    with pytest.raises(ReceiptInvalid, match="for enterprise-credit-risk, not for enterprise-registration"):
        gw.verify("enterprise-registration", _claim(served))
    transport.rules[VERIFY] = _json(lambda _body: one)  # signed, but the answer to one claim of two
    with pytest.raises(ReceiptInvalid, match="another number of answers"):
        gw.verify("enterprise-registration", [_claim(served), _claim(served)])
    other = {"keys": {"credit_code": served.active_enterprise(3)["credit_code"]}, "checks": {"active": False}}
    transport.rules.pop(VERIFY)
    first = gw.request("POST", VERIFY, json={"purpose": "credit_assessment", "claims": [other]}).json()
    transport.rules[VERIFY] = _json(lambda _body: first)  # signed, one answer, but about another entity
    with pytest.raises(ReceiptInvalid, match="another request than the one sent"):
        gw.verify("enterprise-registration", _claim(served))
    transport.rules.pop(VERIFY)
    assert gw.verify("enterprise-registration", _claim(served))  # the honest answer names what was sent


def test_a_jwks_listing_a_pinned_key_twice_is_refused(hostile: tuple[Gateway, _Hostile, Path]) -> None:
    """One copy as pinned, one revoked (or the reverse): the rotation check and the signature
    check would each read their own copy, and a revoked key would verify again."""
    gw, transport, pin = hostile
    pinned = json.loads(pin.read_text())
    (key,) = [k for k in pinned["keys"] if k.get("status", "active") == "active"]
    revoked = {**key, "status": "revoked", "revoked_since": "2020-01-01T00:00:00+00:00"}
    for keys in ([key, revoked], [revoked, key]):
        transport.rules[JWKS] = _json(lambda body, keys=keys: {**body, "keys": keys})
        with pytest.raises(KeysChanged, match="more than once"):
            gw.keys.refresh()
    assert json.loads(pin.read_text()) == pinned


def test_base64_is_read_strictly_as_every_verifier_reads_it(
    served: Served, hostile: tuple[Gateway, _Hostile, Path]
) -> None:
    """A signature whose last character carries other unused bits, or padding, verifies nowhere
    else; the client refuses it too, so what it saved as evidence verifies everywhere."""
    from veilgate_client.evidence import verify_receipt as client_verify

    gw, _transport, pin = hostile
    body = gw.request("POST", VERIFY, json={"purpose": "credit_assessment", "claims": [_claim(served)]}).json()
    jwks = json.loads(pin.read_text())
    client_verify(body["receipt"], jwks)
    head, payload, signature = body["receipt"].split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = signature[-1]
    sibling = next(c for c in alphabet if c != last and alphabet.index(c) >> 4 == alphabet.index(last) >> 4)
    for bent in (f"{head}.{payload}.{signature[:-1]}{sibling}", f"{head}.{payload}.{signature}=="):
        with pytest.raises(ReceiptInvalid):
            client_verify(bent, jwks)


def test_a_huge_or_deeply_nested_answer_is_a_typed_error(hostile: tuple[Gateway, _Hostile, Path]) -> None:
    """64 MiB behind 64 KB of gzip, or JSON nested deeper than Python's stack: `BadResponse`,
    with the body read no further than 8 MiB, not memory spent or a RecursionError."""
    import gzip

    gw, transport, pin = hostile
    pinned = pin.read_text()
    bomb = gzip.compress(b" " * (64 << 20), compresslevel=1)
    assert len(bomb) < 1 << 20
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    transport.rules[JWKS] = lambda _response: httpx.Response(200, content=bomb, headers=headers)
    with pytest.raises(BadResponse, match="over 8 MiB"):
        gw.keys.refresh()
    transport.rules[JWKS] = _raw(200, b"[" * 200_000, "application/json")
    with pytest.raises(BadResponse):
        gw.keys.refresh()
    transport.rules[VERIFY] = _raw(500, b"[" * 200_000, "application/problem+json")
    with pytest.raises(ServerError):
        gw.request("POST", VERIFY, json={"purpose": "credit_assessment", "claims": []})
    assert pin.read_text() == pinned


def test_a_pinned_retirement_is_never_moved_nor_dropped(tmp_path: Path) -> None:
    """A retired key's `retired_at` bounds what it signs: moved later, removed, or missing when
    the key is retired, it would let a stolen old key date new receipts."""
    from veilgate_client.evidence import check_rotation

    ring = KeyRing.create(tmp_path / "keys")
    ring.rotate()
    pinned = ring.jwks()
    retired = next(k for k in pinned["keys"] if k["status"] == "retired")
    others = [k for k in pinned["keys"] if k is not retired]
    for moved in (
        {**retired, "retired_at": "2100-01-01T00:00:00+00:00"},
        {k: v for k, v in retired.items() if k != "retired_at"},
    ):
        with pytest.raises(KeysChanged, match="retirement time"):
            check_rotation(pinned, {"keys": [*others, moved]})
    active = next(k for k in pinned["keys"] if k["status"] == "active")
    with pytest.raises(KeysChanged, match="without a past retirement time"):
        check_rotation(pinned, {"keys": [retired, {**active, "status": "retired"}]})
