"""`Receipt`: what a result was, signed, and the proof that its request is in the audit log.

A Receipt is made only from a response whose receipt verified against the pinned keys and whose
body is exactly what the receipt signs. It saves to a JSON file (`veilgate receipt verify` reads
it) and loads from one, re-checking the signature on load when given the keys.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from veilgate_client.errors import BadResponse, NotIncluded, NotYetCheckpointed, ReceiptInvalid
from veilgate_client.evidence import (
    jws_header,
    leaf_hash,
    root_from_inclusion,
    sha256_digest,
    verify_checkpoint,
    verify_receipt,
)

FILE_FORMAT = "veilgate-receipt"


class AuditSource(Protocol):
    """What a receipt needs from its gateway to prove inclusion (a `Gateway` is one)."""

    url: str

    def get_json(self, path: str, *, params: dict[str, Any] | None = None, auth: bool = True) -> Any: ...

    def jwks(self, kid: str | None = None) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Inclusion:
    """A checked proof: leaf `seq` is in the tree of `size` leaves whose root the checkpoint signs."""

    seq: int
    size: int
    root: str
    checkpoint: str
    audit_path: list[str]
    leaf: dict[str, Any]

    def check(self, document: dict[str, Any], jwks: dict[str, Any]) -> None:
        """Re-check everything offline: the leaf against the document, the path against the signed root."""
        head = verify_checkpoint(self.checkpoint, jwks)
        if head["size"] != self.size or head["root"] != self.root:
            raise NotIncluded("the kept proof does not match its checkpoint")
        _check_leaf(self.leaf, document)
        try:
            path = [bytes.fromhex(p) for p in self.audit_path]
        except (TypeError, ValueError):
            raise NotIncluded("the audit path is not a list of hex hashes") from None
        if any(len(p) != 32 for p in path):
            raise NotIncluded("the audit path holds a hash that is not 32 bytes")
        got = root_from_inclusion(leaf_hash(self.leaf), self.seq, self.size, path)
        if got.hex() != self.root:
            raise NotIncluded(f"leaf {self.seq} is not in the checkpointed tree of {self.size} leaves")


def _check_leaf(leaf: Any, document: dict[str, Any]) -> None:
    if not isinstance(leaf, dict):
        raise NotIncluded("the audit leaf is not an object")
    if leaf.get("seq") != document["audit_seq"] or leaf.get("request_id") != document["request_id"]:
        raise NotIncluded("the audit leaf records another request")
    if leaf.get("result_digest") != sha256_digest(document["result"]):
        raise NotIncluded("the audit leaf records another result")


@dataclass
class Receipt:
    """A verified receipt: `jws` (the compact JWS), `document` (what it signs), where it came from."""

    jws: str
    document: dict[str, Any]
    gateway_url: str | None = None
    inclusion: Inclusion | None = None
    _source: AuditSource | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_body(cls, body: dict[str, Any], source: AuditSource, *, consumer: str | None = None) -> Receipt:
        """Check a response body's receipt against the pinned keys; the body must be what it signs."""
        token = body.get("receipt")
        if not isinstance(token, str):
            raise ReceiptInvalid("the response carries no receipt")
        kid = jws_header(token).get("kid")
        document = verify_receipt(token, source.jwks(kid if isinstance(kid, str) else None))
        if {k: v for k, v in body.items() if k != "receipt"} != document:
            raise ReceiptInvalid("the response body differs from what its receipt signs")
        if consumer is not None and document["consumer"] != consumer:
            raise ReceiptInvalid(f"the receipt was issued to {document['consumer']}, not {consumer}")
        return cls(token, document, source.url, None, source)

    @property
    def request_id(self) -> str:
        return str(self.document["request_id"])

    @property
    def audit_seq(self) -> int:
        return int(self.document["audit_seq"])

    @property
    def result(self) -> Any:
        return self.document["result"]

    def verify(self, jwks: dict[str, Any]) -> dict[str, Any]:
        """Check the signature (and a kept inclusion proof) against `jwks`, offline."""
        document = verify_receipt(self.jws, jwks)
        if document != self.document:
            raise ReceiptInvalid("the saved document differs from what the receipt signs")
        if self.inclusion is not None:
            self.inclusion.check(document, jwks)
        return document

    def prove_inclusion(self, *, wait: float = 0.0, gateway: AuditSource | None = None) -> Inclusion:
        """Check that this request's audit leaf records this result, and is in the tree of the first
        signed checkpoint that covers it (RFC 9162). `wait`: seconds to wait for that checkpoint."""
        source = gateway or self._source
        if source is None:
            raise ValueError("this receipt has no gateway: pass gateway=")
        seq = self.audit_seq
        leaf = source.get_json(f"/v1/audit/leaves/{seq}")
        _check_leaf(leaf, self.document)
        token = _first_checkpoint(source, seq, wait)
        kid = jws_header(token).get("kid")
        head = verify_checkpoint(token, source.jwks(kid if isinstance(kid, str) else None))
        proof = source.get_json("/v1/audit/proof/inclusion", params={"leaf": seq, "size": head["size"]}, auth=False)
        path = proof.get("audit_path") if isinstance(proof, dict) else None
        if not isinstance(path, list):
            raise NotIncluded(f"the gateway gave no audit path for leaf {seq}")
        inclusion = Inclusion(seq, head["size"], head["root"], token, path, leaf)
        inclusion.check(self.document, source.jwks())
        self.inclusion = inclusion
        return inclusion

    def to_json(self) -> dict[str, Any]:
        kept = None if self.inclusion is None else self.inclusion.__dict__
        return {"format": FILE_FORMAT, "gateway": self.gateway_url, "receipt": self.jws,
                "document": self.document, "inclusion": kept}  # fmt: skip

    def save(self, path: str | Path) -> Path:
        """Write the receipt (and its inclusion proof, if proven) as JSON; returns the path."""
        target = Path(path)
        target.write_text(json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return target

    @classmethod
    def load(
        cls, path: str | Path, *, jwks: dict[str, Any] | None = None, gateway: AuditSource | None = None
    ) -> Receipt:
        """Read a saved receipt or a saved response body and verify it, with its kept inclusion proof:
        against `jwks` (the published keys), or `gateway`'s pinned keys. Never loaded unchecked."""
        if jwks is None and gateway is None:
            raise ValueError("pass jwks= or gateway=: a receipt is only loaded with the keys that check it")
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except ValueError:
            raise ReceiptInvalid(f"{path} is not JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("receipt"), str):
            raise ReceiptInvalid(f"{path} holds no receipt")
        if data.get("format") == FILE_FORMAT:
            kept, document = data.get("inclusion"), data.get("document")
            try:
                inclusion = Inclusion(**kept) if kept else None
            except TypeError:
                raise ReceiptInvalid(f"{path} holds an inclusion proof of another shape") from None
            if not isinstance(document, dict):
                raise ReceiptInvalid(f"{path} holds no document")
            receipt = cls(data["receipt"], document, data.get("gateway"), inclusion, gateway)
        else:  # a saved response body: the document is the body itself
            receipt = cls(data["receipt"], {k: v for k, v in data.items() if k != "receipt"}, None, None, gateway)
        if jwks is None and gateway is not None:
            kid = jws_header(receipt.jws).get("kid")
            jwks = gateway.jwks(kid if isinstance(kid, str) else None)
        receipt.verify(jwks or {})
        return receipt


def _first_checkpoint(source: AuditSource, seq: int, wait: float) -> str:
    """The JWS of the first signed checkpoint that covers leaf `seq`, waiting up to `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        found = source.get_json("/v1/audit/checkpoints", params={"after_size": seq, "limit": 1}, auth=False)
        listed = found.get("checkpoints") if isinstance(found, dict) else None
        if not isinstance(listed, list):
            raise BadResponse("the gateway's list of checkpoints is not a list")
        if listed:
            token = listed[0].get("jws") if isinstance(listed[0], dict) else None
            if not isinstance(token, str):
                raise BadResponse("the gateway listed a checkpoint without its JWS")
            return token
        if time.monotonic() >= deadline:
            raise NotYetCheckpointed(f"no signed checkpoint covers leaf {seq} yet; ask again later")
        time.sleep(0.5)
