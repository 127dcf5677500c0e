"""Merkle proofs (RFC 9162): valid for every size and leaf, invalid when anything is changed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain import merkle

sizes = st.integers(min_value=1, max_value=70)


def _leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(f"record {i}".encode()) for i in range(n)]


def _flip(data: bytes, bit: int) -> bytes:
    position = bit % (len(data) * 8)
    out = bytearray(data)
    out[position // 8] ^= 1 << (position % 8)
    return bytes(out)


def test_known_roots() -> None:
    assert merkle.root([]).hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    one = merkle.leaf_hash(b"")
    assert one.hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    assert merkle.root([one, one]) == merkle.node_hash(one, one)


@given(sizes, st.data())
def test_inclusion_verifies_and_fails_when_tampered(size: int, data: st.DataObject) -> None:
    leaves = _leaves(size)
    head = merkle.root(leaves)
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    proof = merkle.inclusion_proof(index, leaves)
    assert merkle.is_valid_inclusion(index, size, leaves[index], proof, head)
    bit = data.draw(st.integers(min_value=0, max_value=255))
    assert not merkle.is_valid_inclusion(index, size, _flip(leaves[index], bit), proof, head)
    assert not merkle.is_valid_inclusion(index, size, leaves[index], proof, _flip(head, bit))
    if proof:
        which = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
        changed = [*proof[:which], _flip(proof[which], bit), *proof[which + 1 :]]
        assert not merkle.is_valid_inclusion(index, size, leaves[index], changed, head)
        assert not merkle.is_valid_inclusion(index, size, leaves[index], proof[:-1], head)
    if size > 1:
        other = (index + 1) % size
        assert not merkle.is_valid_inclusion(other, size, leaves[index], proof, head)
    assert not merkle.is_valid_inclusion(index, size, leaves[index], [*proof, head], head)
    assert not merkle.is_valid_inclusion(size, size, leaves[index], proof, head)


@given(sizes, st.data())
def test_consistency_verifies_and_fails_when_tampered(second: int, data: st.DataObject) -> None:
    leaves = _leaves(second)
    first = data.draw(st.integers(min_value=1, max_value=second))
    first_root, second_root = merkle.root(leaves[:first]), merkle.root(leaves)
    proof = merkle.consistency_proof(first, leaves)
    assert merkle.is_valid_consistency(first, second, first_root, second_root, proof)
    bit = data.draw(st.integers(min_value=0, max_value=255))
    assert not merkle.is_valid_consistency(first, second, _flip(first_root, bit), second_root, proof)
    assert not merkle.is_valid_consistency(first, second, first_root, _flip(second_root, bit), proof)
    if proof:
        which = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
        changed = [*proof[:which], _flip(proof[which], bit), *proof[which + 1 :]]
        assert not merkle.is_valid_consistency(first, second, first_root, second_root, changed)


@given(st.integers(min_value=2, max_value=40), st.data())
def test_a_rewritten_prefix_is_not_consistent(second: int, data: st.DataObject) -> None:
    """A log that rewrote a record before a published checkpoint cannot prove consistency."""
    leaves = _leaves(second)
    first = data.draw(st.integers(min_value=1, max_value=second - 1))
    published = merkle.root(leaves[:first])
    victim = data.draw(st.integers(min_value=0, max_value=first - 1))
    rewritten = [*leaves[:victim], merkle.leaf_hash(b"forged"), *leaves[victim + 1 :]]
    proof = merkle.consistency_proof(first, rewritten)
    assert not merkle.is_valid_consistency(first, second, published, merkle.root(rewritten), proof)


@given(st.integers(min_value=0, max_value=140), st.data())
def test_cached_tree_agrees_with_the_rfc_definitions(size: int, data: st.DataObject) -> None:
    leaves = _leaves(size)
    tree = merkle.MerkleTree(leaves)
    assert tree.size == size
    for prefix in {0, size, data.draw(st.integers(min_value=0, max_value=size))}:
        assert tree.root(prefix) == merkle.root(leaves[:prefix])
    if size:
        second = data.draw(st.integers(min_value=1, max_value=size))
        index = data.draw(st.integers(min_value=0, max_value=second - 1))
        first = data.draw(st.integers(min_value=1, max_value=second))
        assert tree.inclusion_proof(index, second) == merkle.inclusion_proof(index, leaves[:second])
        assert tree.consistency_proof(first, second) == merkle.consistency_proof(first, leaves[:second])


def test_cached_tree_refuses_sizes_beyond_the_log() -> None:
    tree = merkle.MerkleTree(_leaves(5))
    with pytest.raises(ValueError, match="beyond the log"):
        tree.root(6)
    with pytest.raises(ValueError, match="beyond the log"):
        tree.inclusion_proof(0, 6)
    with pytest.raises(ValueError, match="beyond the log"):
        tree.consistency_proof(2, 6)
    with pytest.raises(ValueError, match="outside the tree"):
        tree.inclusion_proof(5, 5)
