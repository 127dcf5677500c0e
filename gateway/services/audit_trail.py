"""The audit log as a transparency log: checkpoints, and checking the whole log end to end.

`verify_log` trusts nothing the log's owner could have rewritten: it re-derives every leaf hash
from the record, rebuilds the tree, checks each checkpoint's signature against the published
JWKS and its root against the rebuilt tree, and checks the log against checkpoints that
witnesses kept. It stops at the first failure and says where it is.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.atomic_files import write_atomic
from gateway.domain import merkle
from gateway.domain.canonical_json import canonical
from gateway.domain.trail import CHECKPOINT_TYPE, AuditLeaf, Checkpoint, TreeHead, utc_now
from gateway.errors import AuditUnavailable, SignatureInvalid
from gateway.services.receipts import fetch_json, load_jwks, verify_checkpoint
from gateway.signing import KeyRing
from gateway.state.ports import AuditLogStore

_log = logging.getLogger("veilgate.audit")

SIGNED_HEAD_FILE = "signed-head.json"
"""In the audit directory (with the subject secret): the newest tree head this installation
signed, out of the database."""


def make_checkpoint(log: AuditLogStore, keys: KeyRing, *, issuer: str, kept: Path | None = None) -> Checkpoint | None:
    """Sign and store a tree head if the log grew since the last one; None if there was nothing to do.

    SECURITY: the signer only extends what it signed before. Whoever can write the database but
    not the gateway's files (a PostgreSQL administrator) could rewrite a leaf and its hash, and even delete
    the checkpoints, and have the gateway sign the rewritten history. The tree must therefore
    hold the newest stored checkpoint and the head kept in `kept` (a file in the audit directory,
    out of the database) at their sizes; LogForked otherwise, and nothing is signed.
    """
    # The heads first, the size after: a head another replica signs meanwhile covers leaves
    # that are then counted too, so only a log that lost leaves is shorter than a head.
    latest = log.latest_checkpoint()
    known_heads = (latest, _kept_head(kept))
    size = log.size()
    for known in known_heads:
        if known is not None and (known.size > size or log.root(known.size).hex() != known.root):
            raise LogForked(
                f"the audit log no longer holds the checkpoint of size {known.size} it had: nothing is signed; "
                "run `veilgate audit verify` and compare with the witnesses' checkpoints"
            )
    if size == 0 or (latest is not None and latest.size >= size):
        return None
    head = TreeHead(iss=issuer, size=size, root=log.root(size).hex(), time=utc_now())
    jws = keys.sign_document(canonical(head.model_dump(mode="json")), typ=CHECKPOINT_TYPE)
    checkpoint = Checkpoint(size=head.size, root=head.root, time=head.time, jws=jws)
    stored = log.add_checkpoint(checkpoint)
    if kept is not None:
        try:  # after the store: a head that cannot be kept still stands, checked against the older one
            write_atomic(kept, checkpoint.model_dump_json().encode())
        except OSError as exc:
            _log.warning("the signed head could not be kept in %s (%s)", kept, type(exc).__name__)
    return checkpoint if stored else None


class LogForked(AuditUnavailable):
    """The log does not extend a head this installation signed: it was rewritten."""


def _kept_head(kept: Path | None) -> Checkpoint | None:
    if kept is None or not kept.is_file():
        return None
    try:
        return Checkpoint.model_validate_json(kept.read_bytes())
    except ValidationError:
        raise LogForked(f"{kept.name} is not a signed head: nothing is signed until it is restored") from None


@dataclass(frozen=True, slots=True)
class LogReport:
    leaves: int
    checkpoints: int
    witnessed: int
    failure: str | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


class _Broken(Exception):
    pass


def _rebuild_tree(log: AuditLogStore, progress: Callable[[int], None] | None) -> merkle.MerkleTree:
    tree = merkle.MerkleTree()
    for row in log.stored():
        expected = tree.size
        if row.seq != expected:
            raise _Broken(f"leaf {expected} is missing: the next stored leaf is {row.seq}")
        try:
            leaf = AuditLeaf.model_validate_json(row.record)
        except ValidationError:
            raise _Broken(f"leaf {expected} is not a well-formed audit record") from None
        if leaf.seq != expected:
            raise _Broken(f"leaf {expected} holds the record of position {leaf.seq}: leaves were moved")
        if leaf.encode() != row.record:
            raise _Broken(f"leaf {expected} is not in canonical form: it was edited outside the log")
        hashed = merkle.leaf_hash(row.record)
        if hashed != row.hash:
            raise _Broken(f"leaf {expected} was changed after it was written: its record no longer matches its hash")
        tree.append(hashed)
        if progress is not None:
            progress(1)
    return tree


def _check_head(tree: merkle.MerkleTree, head: TreeHead, since: int, what: str) -> None:
    if head.size > tree.size:
        raise _Broken(f"the log was cut: {what} covers {head.size} leaves, the log holds {tree.size}")
    if tree.root(head.size).hex() != head.root:
        raise _Broken(f"leaves {since} to {head.size - 1} do not match {what}: they were rewritten")


def verify_log(
    log: AuditLogStore,
    jwks: Mapping[str, Any],
    *,
    witnessed: Iterable[str] = (),
    progress: Callable[[int], None] | None = None,
) -> LogReport:
    """Check every leaf, the tree, every checkpoint, their consistency, and witnessed heads."""
    tree = merkle.MerkleTree()
    count = seen = 0
    try:
        tree = _rebuild_tree(log, progress)
        previous: TreeHead | None = None
        for stored in log.checkpoints(limit=1 << 62):
            what = f"the checkpoint of size {stored.size} signed at {stored.time}"
            try:
                head = verify_checkpoint(stored.jws, jwks)
            except SignatureInvalid as exc:
                raise _Broken(f"{what} does not verify: {exc.detail}") from None
            if (head.size, head.root, head.time) != (stored.size, stored.root, stored.time):
                raise _Broken(f"{what} was edited: its stored fields differ from what was signed")
            _check_head(tree, head, previous.size if previous else 0, what)
            if previous is not None and not merkle.is_valid_consistency(
                previous.size,
                head.size,
                bytes.fromhex(previous.root),
                bytes.fromhex(head.root),
                tree.consistency_proof(previous.size, head.size),
            ):
                raise _Broken(f"{what} is not consistent with the checkpoint of size {previous.size}")
            previous, count = head, count + 1
        for token in witnessed:
            try:
                head = verify_checkpoint(token, jwks)
            except SignatureInvalid as exc:
                raise _Broken(f"a witnessed checkpoint does not verify: {exc.detail}") from None
            _check_head(tree, head, 0, f"the checkpoint of size {head.size} that a witness kept from {head.time}")
            seen += 1
    except _Broken as broken:
        return LogReport(leaves=tree.size, checkpoints=count, witnessed=seen, failure=str(broken))
    return LogReport(leaves=tree.size, checkpoints=count, witnessed=seen)


@dataclass(frozen=True, slots=True)
class WitnessReport:
    previous: TreeHead | None
    latest: TreeHead | None
    checkpoint: str | None
    """The newest checkpoint JWS, to keep for the next run."""


WITNESS_MOST_PAGES = 10_000
"""Pages of 1,000 checkpoints a witness reads at most (one a minute is 526 pages a year)."""


def witness(base_url: str, kept: str | None) -> WitnessReport:
    """Check a gateway's newest checkpoint against one kept from an earlier run.

    What a witness does (RFC 9162 section 8.1.4 in spirit): fetch the published keys and the
    newest signed tree head, and prove with a consistency proof that the head it kept earlier
    describes a prefix of the new one. The roots compared are the signed ones, never those in
    the proof response. Raises SignatureInvalid if the log was rewritten or cut.
    """
    base = base_url.rstrip("/")
    jwks = load_jwks(f"{base}/.well-known/jwks.json")
    previous = verify_checkpoint(kept, jwks) if kept else None
    after = previous.size - 1 if previous else -1
    newest: Checkpoint | None = None
    for _page in range(WITNESS_MOST_PAGES):
        page = fetch_json(f"{base}/v1/audit/checkpoints?after_size={after}&limit=1000")
        found = [Checkpoint.model_validate(c) for c in page.get("checkpoints", [])]
        if not found:
            break
        sizes = [after, *(c.size for c in found)]
        if any(b <= a for a, b in itertools.pairwise(sizes)):  # a hostile gateway's endless list
            raise SignatureInvalid("the gateway's checkpoints do not grow page after page")
        newest, after = found[-1], found[-1].size
    else:
        raise SignatureInvalid(f"the gateway lists over {WITNESS_MOST_PAGES} pages of checkpoints")
    if newest is None:
        if previous is not None:
            raise SignatureInvalid(f"the gateway no longer publishes a checkpoint of {previous.size} leaves or more")
        return WitnessReport(None, None, None)
    latest = verify_checkpoint(newest.jws, jwks)
    if previous is not None:
        if latest.size < previous.size:
            raise SignatureInvalid(f"the log shrank from {previous.size} to {latest.size} leaves")
        proof: list[bytes] = []
        if latest.size > previous.size:
            body = fetch_json(f"{base}/v1/audit/proof/consistency?first={previous.size}&second={latest.size}")
            proof = [bytes.fromhex(h) for h in body.get("proof", [])]
        if not merkle.is_valid_consistency(
            previous.size, latest.size, bytes.fromhex(previous.root), bytes.fromhex(latest.root), proof
        ):
            raise SignatureInvalid(
                f"the log was rewritten: the checkpoint of {latest.size} leaves does not extend "
                f"the one of {previous.size} leaves kept from {previous.time}"
            )
    return WitnessReport(previous, latest, newest.jws)
