"""Releasing a result: audit it, then sign it, in that order.

The leaf goes in first because the receipt names its position (`audit_seq`), so a consumer
holding a receipt can ask for the inclusion proof of exactly its request. If the log cannot
take the leaf, nothing is signed and nothing leaves.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from gateway.domain.canonical_json import canonical
from gateway.domain.trail import AuditEvent, Cost, Decision, Json, PrivacySpent, digest
from gateway.observability.metrics import observe_release
from gateway.services.needs import HasAudit, HasReceiptKeys, HasSettings
from gateway.services.receipts import sign_receipt


class ReleaseNeeds(HasAudit, HasReceiptKeys, HasSettings, Protocol):
    """Releasing a result: the audit log, the receipt keys and the issuer."""


@dataclass(frozen=True, slots=True)
class Release:
    document: Json
    """The signed result document (a `ResultDocument`), as JSON values."""
    payload: bytes
    """Exactly what the receipt signs: the document's RFC 8785 bytes."""
    receipt: str

    @property
    def audit_seq(self) -> int:
        return int(self.document["audit_seq"])

    def body(self) -> Json:
        """The response body: the signed document itself, plus the receipt that signs it."""
        return {**self.document, "receipt": self.receipt}

    def body_bytes(self) -> bytes:
        """`body()` as JSON bytes, from the signed bytes (one encoding per release, not two)."""
        return b'%s,"receipt":"%s"}' % (self.payload[:-1], self.receipt.encode("ascii"))


@dataclass(frozen=True, slots=True)
class PendingRelease:
    """A result whose leaf is written but not yet durable; `complete` signs it once it is."""

    leaf: AuditEvent
    unsigned: Json
    """The result document without `audit_seq`, as JSON values."""

    def complete(self, rt: ReleaseNeeds, seq: int) -> Release:
        # The document is built from JSON values of known shape in `prepare_release` (the result
        # and the request already passed `digest`), so it is encoded as is: no model round trip.
        document = {**self.unsigned, "audit_seq": seq}
        payload = canonical(document)
        signed = Release(document, payload, sign_receipt(rt.receipt_keys, payload))
        spent = self.unsigned.get("privacy_spent")
        observe_release(self.unsigned.get("dataset"), float(spent["epsilon"]) if isinstance(spent, dict) else 0.0)
        return signed


def prepare_release(
    rt: ReleaseNeeds,
    event: AuditEvent,
    *,
    service: str,
    request: Json,
    result: Json,
    dataset: str | None = None,
    dataset_version: str | None = None,
    policy_version: str | None = None,
    privacy_spent: PrivacySpent | None = None,
    cost: Cost | None = None,
    subjects: Iterable[str] = (),
    grant: str | None = None,
) -> PendingRelease:
    """The leaf of an allowed request and the document that its receipt will sign.

    `subjects` are the entities asked about, already as pseudonyms (`AuditLog.pseudonym`).
    """
    if event.principal is None:
        raise ValueError("a result is released only to an authenticated principal")
    leaf = event.model_copy(
        update={
            "service": service,
            "grant": grant,
            "dataset": dataset,
            "dataset_version": dataset_version,
            "decision": Decision.ALLOWED,
            "status": 200,
            "cost": cost,
            "result_digest": digest(result),
            "subjects": tuple(subjects),
        }
    )
    unsigned = {
        "iss": rt.settings.issuer,
        "iat": int(time.time()),
        "request_id": event.request_id,
        "consumer": event.principal,
        "service": service,
        "dataset": dataset,
        "dataset_version": dataset_version,
        "policy_version": policy_version,
        "request_digest": digest(request),
        "result": result,
        "privacy_spent": None if privacy_spent is None else privacy_spent.model_dump(mode="json"),
    }
    return PendingRelease(leaf, unsigned)


def release(rt: ReleaseNeeds, pending: PendingRelease) -> Release:
    """Append the leaf (blocking until it is durable), then sign the document naming it.

    Async routes do the same without blocking: await `rt.audit.append_async(pending.leaf)`, then
    `pending.complete(rt, seq)`.
    """
    return pending.complete(rt, rt.audit.append_now(pending.leaf))
