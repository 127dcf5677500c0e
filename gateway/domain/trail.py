"""What the audit log and the receipts hold: leaves, checkpoints and result documents.

Pure types. Each has exactly one byte encoding, RFC 8785 canonical JSON (`canonical_json`), because signatures and
Merkle hashes are computed over bytes: two encoders that differ in one space would make a valid
record look forged. Unknown fields are refused when reading back, so a verifier never skips a
field it does not understand.

SECURITY: a leaf never holds a key of a person or an enterprise in clear (only `subjects`,
keyed hashes made by the audit log) and never a noiseless value (only `result_digest`).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gateway.domain.canonical_json import LARGEST_EXACT_INT, canonical

RECEIPT_TYPE = "veilgate-receipt+json"
"""JWS `typ` of receipts. Checkpoints use another, so one can never pass for the other."""
CHECKPOINT_TYPE = "veilgate-checkpoint+json"

Json = dict[str, Any]


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

    @staticmethod
    def encode_at(event: AuditEvent, seq: int) -> bytes:
        """`AuditLeaf.of(event, seq).encode()` without building the leaf: the event was
        validated when it was made, and `seq` comes from the log (a test holds the bytes equal)."""
        if seq < 0:
            raise ValueError("a leaf's seq is not negative")
        return canonical({**event.model_dump(mode="json"), "seq": seq})


class LeafText:
    """An event's leaf record but for its `seq`, encoded: numbering it is joining bytes.

    Canonical JSON writes keys in order, so the record is the event's fields before "seq", then
    "seq", then the fields after it. The writers number leaves inside the log's write
    transaction, and on PostgreSQL that transaction holds a lock every replica waits for: the
    encoding is done before it, the numbering in it."""

    __slots__ = ("_after", "_before")

    def __init__(self, before: bytes, after: bytes) -> None:
        self._before = before
        self._after = after

    @classmethod
    def of(cls, event: AuditEvent) -> LeafText:
        fields = event.model_dump(mode="json")
        before = canonical({k: v for k, v in fields.items() if k < "seq"})[1:-1]
        after = canonical({k: v for k, v in fields.items() if k > "seq"})[1:-1]
        return cls(before, after)

    def at(self, seq: int) -> bytes:
        """The record of this event at position `seq`: `AuditLeaf.of(event, seq).encode()`."""
        if not 0 <= seq <= LARGEST_EXACT_INT:  # as canonical JSON refuses larger integers
            raise ValueError("a leaf's seq is not negative, and not above 2^53 - 1")
        middle = b'"seq":' + str(seq).encode()
        return b"{" + b",".join(part for part in (self._before, middle, self._after) if part) + b"}"


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
