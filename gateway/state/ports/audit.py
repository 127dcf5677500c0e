"""The audit log's port: the append-only trail, its Merkle tree and its checkpoints."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

from gateway.domain.trail import AuditEvent, AuditLeaf, Checkpoint, Decision


@dataclass(frozen=True, slots=True)
class StoredLeaf:
    """A row as stored, unparsed: what `veilgate audit verify` checks."""

    seq: int
    record: bytes
    hash: bytes


@dataclass(frozen=True, slots=True)
class LeafFilter:
    since: str | None = None
    until: str | None = None
    principal: str | None = None
    service: str | None = None
    dataset: str | None = None
    decision: Decision | None = None


class AuditLogStore(Protocol):
    """The append-only audit trail: leaves numbered in one total order, a Merkle tree over them,
    signed checkpoints. An append resolves only once its leaf is durable."""

    def pseudonym(self, kind: str, key: str) -> str: ...

    def pseudonym_key_id(self) -> str: ...

    def append(self, event: AuditEvent) -> Future[int]: ...

    def append_now(self, event: AuditEvent) -> int: ...

    async def append_async(self, event: AuditEvent) -> int: ...

    def size(self) -> int: ...

    def root(self, size: int) -> bytes: ...

    def inclusion_proof(self, index: int, size: int) -> tuple[bytes, list[bytes]]: ...

    def consistency_proof(self, first: int, second: int) -> list[bytes]: ...

    def leaf(self, seq: int) -> AuditLeaf | None: ...

    def find(self, where: LeafFilter, *, after: int = -1, limit: int = 100) -> list[AuditLeaf]: ...

    def find_subject(self, pseudonym: str, *, limit: int = 10_000) -> list[AuditLeaf]: ...

    def stored(self, *, batch: int = 10_000) -> Iterator[StoredLeaf]: ...

    def add_checkpoint(self, checkpoint: Checkpoint) -> bool: ...

    def checkpoints(self, *, after_size: int = -1, limit: int = 1000) -> list[Checkpoint]: ...

    def latest_checkpoint(self) -> Checkpoint | None: ...

    def close(self) -> None: ...
