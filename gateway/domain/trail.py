"""What the audit log and the receipts hold: leaves, checkpoints and result documents.

Pure types. Each has exactly one byte encoding, RFC 8785 canonical JSON, because signatures and
Merkle hashes are computed over bytes: two encoders that differ in one space would make a valid
record look forged. Unknown fields are refused when reading back, so a verifier never skips a
field it does not understand.

SECURITY: a leaf never holds a key of a person or an enterprise in clear (only `subjects`,
keyed hashes made by the audit log) and never a noiseless value (only `result_digest`).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

import rfc8785
from pydantic import BaseModel, ConfigDict, Field

RECEIPT_TYPE = "veilgate-receipt+json"
"""JWS `typ` of receipts. Checkpoints use another, so one can never pass for the other."""
CHECKPOINT_TYPE = "veilgate-checkpoint+json"

Json = dict[str, Any]


def canonical(value: Any) -> bytes:
    """RFC 8785 canonical JSON: the one encoding that is hashed and signed.

    Most documents here hold only text, integers, booleans, ASCII keys and floats such as 0.975;
    for those the C encoder of the standard library already writes RFC 8785 (same escapes, same
    key order, and for a non-integral float of magnitude in [1e-4, 1e16) the same shortest
    round-trip digits in positional notation) at a twentieth of the cost, and a property test
    holds the two outputs equal. Anything else (integral or very large or small floats,
    non-ASCII keys, integers beyond 2**53) goes through rfc8785.
    """
    if _plain(value):
        try:
            return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        except UnicodeEncodeError:
            pass  # a lone surrogate: let rfc8785 refuse it in its own words
    return rfc8785.dumps(value)


_SAFE_INT = 2**53


def _plain(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int:
            if -_SAFE_INT < item < _SAFE_INT:
                continue
            return False
        if kind is float:
            # Python writes 1e-05 and 2.0 where RFC 8785 (ECMAScript) writes 0.00001 and 2.
            if 1e-4 <= abs(item) < 1e16 and not item.is_integer():
                continue
            return False
        if kind is dict:
            for key, child in item.items():
                if type(key) is not str or not key.isascii():
                    return False
                stack.append(child)
            continue
        if kind is list or kind is tuple:
            stack.extend(item)
            continue
        return False
    return True


def digest(value: Any) -> str:
    """SHA-256 of the canonical JSON of `value`, as `sha256:<hex>`."""
    return "sha256:" + hashlib.sha256(canonical(value)).hexdigest()


def timestamp(moment: datetime) -> str:
    """A time as every record writes it: UTC, milliseconds, `Z`; string order is time order."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_now() -> str:
    return timestamp(datetime.now(UTC))


class Decision(StrEnum):
    ALLOWED = "allowed"
    REFUSED = "refused"
    FAILED = "failed"

    @classmethod
    def for_status(cls, status: int) -> Decision:
        if status < 400:
            return cls.ALLOWED
        return cls.REFUSED if status < 500 else cls.FAILED


class Cost(BaseModel):
    """What a request was charged: privacy budget and quota units.

    Budgets are exact decimals, written as strings ("0.25"): a ledger that adds floats drifts,
    and a float in a signed document has more than one spelling.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    epsilon: Decimal = Field(Decimal(0), ge=0)
    delta: Decimal = Field(Decimal(0), ge=0, le=1)
    quota_units: int = Field(0, ge=0)


class AuditEvent(BaseModel):
    """One request as the request path saw it; the log adds its position (`seq`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    time: str
    request_id: str
    principal: str | None = None
    organisation: str | None = None
    method: str
    route: str
    service: str | None = None
    grant: str | None = None
    dataset: str | None = None
    dataset_version: str | None = None
    decision: Decision
    reason: str | None = None
    cost: Cost | None = None
    result_digest: str | None = None
    subjects: tuple[str, ...] = ()
    status: int = Field(ge=100, le=599)


class AuditLeaf(AuditEvent):
    """An event at its position in the log: exactly what is hashed into the Merkle tree."""

    seq: int = Field(ge=0)

    def encode(self) -> bytes:
        return canonical(self.model_dump(mode="json"))

    @classmethod
    def of(cls, event: AuditEvent, seq: int) -> AuditLeaf:
        return cls(seq=seq, **event.model_dump())


class TreeHead(BaseModel):
    """The payload of a checkpoint: the log's size and root at a time, signed by the gateway."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    iss: str
    size: int = Field(ge=0)
    root: str = Field(pattern=r"^[0-9a-f]{64}$")
    time: str


class Checkpoint(BaseModel):
    """A signed tree head as published; `jws` is what a witness keeps."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    size: int = Field(ge=0)
    root: str = Field(pattern=r"^[0-9a-f]{64}$")
    time: str
    jws: str


class PrivacySpent(BaseModel):
    """Exact decimals, written as strings, like `Cost`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    epsilon: Decimal = Field(ge=0)
    delta: Decimal = Field(Decimal(0), ge=0, le=1)


class ResultDocument(BaseModel):
    """The signed payload of a receipt, and the body a result-bearing response returns."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    iss: str
    iat: int = Field(ge=0, description="Seconds since the epoch, as in JWT.")
    request_id: str
    consumer: str
    service: str
    dataset: str | None
    dataset_version: str | None
    policy_version: str | None
    request_digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    result: Json
    privacy_spent: PrivacySpent | None
    audit_seq: int = Field(ge=0)

    def encode(self) -> bytes:
        return canonical(self.model_dump(mode="json"))
