"""Bytes that are signed or hashed do not move: receipts, checkpoints, audit leaves, job plan
hashes, policy versions, key ids and the pseudonym inputs of the ledger, against a fixture made
by the encoders this gateway had before `gateway.domain.canonical_json` replaced them.

A change here breaks every stored receipt, log and ledger: it needs a new format version, not
a new fixture."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.domain.canonical_json import canonical, canonical_text
from gateway.domain.job_plan import plan_sha256
from gateway.domain.merkle import leaf_hash
from gateway.domain.policy import FieldCheck, PolicyBundle
from gateway.domain.trail import CHECKPOINT_TYPE, RECEIPT_TYPE, AuditLeaf, ResultDocument, TreeHead
from gateway.signing import KeyInfo, KeyRing, thumbprint

FIXTURE: dict[str, Any] = json.loads((Path(__file__).parent / "canonical_fixture.json").read_text(encoding="utf-8"))


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"veilgate canonical fixture").digest())
    kid = thumbprint(key.public_key())
    return KeyRing(tmp_path, [KeyInfo(kid, datetime(2026, 1, 1, tzinfo=UTC), "active")], {kid: key})


def test_key_id_is_the_stored_thumbprint(ring: KeyRing) -> None:
    assert ring.active.kid == FIXTURE["kid"]


def test_receipt_bytes_and_signature_are_the_stored_ones(ring: KeyRing) -> None:
    stored = FIXTURE["receipt"]
    document = ResultDocument.model_validate(stored["document"])
    assert document.encode().decode() == stored["bytes"]
    # Ed25519 signatures are deterministic: same header, payload and key, same JWS.
    assert ring.sign_document(document.encode(), typ=RECEIPT_TYPE) == stored["jws"]


def test_checkpoint_signature_is_the_stored_one(ring: KeyRing) -> None:
    stored = FIXTURE["checkpoint"]
    head = TreeHead.model_validate(stored["head"])
    assert ring.sign_document(canonical(head.model_dump(mode="json")), typ=CHECKPOINT_TYPE) == stored["jws"]


def test_audit_leaf_bytes_and_hash_are_the_stored_ones() -> None:
    stored = FIXTURE["audit_leaf"]
    leaf = AuditLeaf.model_validate(stored["leaf"])
    assert leaf.encode().decode() == stored["bytes"]
    assert leaf_hash(leaf.encode()).hex() == stored["leaf_hash"]


def test_job_plan_hash_is_the_stored_one() -> None:
    assert plan_sha256(FIXTURE["job_plan"]["planned"]) == FIXTURE["job_plan"]["sha256"]


def test_policy_version_is_the_stored_one() -> None:
    stored = FIXTURE["policy_bundle"]
    assert PolicyBundle.model_validate(stored["bundle"]).version == stored["version"]


@pytest.mark.parametrize("case", FIXTURE["stable_text"], ids=lambda case: case["text"][:24])
def test_pseudonym_inputs_are_the_stored_text(case: dict[str, Any]) -> None:
    assert canonical_text(case["value"]) == case["text"]


def test_a_policy_cannot_name_an_integer_canonical_json_cannot_key() -> None:
    with pytest.raises(ValueError, match="2\\*\\*53"):
        FieldCheck(column="capital", check="at_least", thresholds=(2**53,))
    with pytest.raises(ValueError, match="2\\*\\*53"):
        FieldCheck(column="capital", check="fixed", value=-(2**53))
    assert FieldCheck(column="capital", check="at_least", thresholds=(2**53 - 1,)).thresholds == (2**53 - 1,)
