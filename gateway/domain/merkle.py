"""Merkle tree hashing and proofs after RFC 9162 (Certificate Transparency 2.0), section 2.1.

Leaves and interior nodes are hashed with distinct prefixes (0x00, 0x01), so a leaf can never
pass for a node. The list functions (`root`, `inclusion_proof`, `consistency_proof`) follow the
RFC's recursive definitions literally and serve as the reference; `MerkleTree` answers the same
questions in O(log n) from cached complete subtrees, for a log of millions of leaves.
Verification follows the RFC's numbered algorithms step by step and fails closed: any malformed
proof is simply not valid.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return node_hash(root(leaves[:k]), root(leaves[k:]))


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]): the audit path of leaf `index` in the tree of `leaves`."""
    if not 0 <= index < len(leaves):
        raise ValueError("leaf index outside the tree")
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*inclusion_proof(index, leaves[:k]), root(leaves[k:])]
    return [*inclusion_proof(index - k, leaves[k:]), root(leaves[:k])]


def consistency_proof(first: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]): that the tree of the first `first` leaves is a prefix of this one."""
    if not 0 < first <= len(leaves):
        raise ValueError("first size must be between 1 and the tree size")
    return _subproof(first, leaves, complete=True)


def _subproof(m: int, leaves: Sequence[bytes], *, complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [root(leaves)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, leaves[:k], complete=complete), root(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], complete=False), root(leaves[:k])]


class MerkleTree:
    """An append-only tree over leaf hashes that keeps every complete, aligned subtree's hash.

    `_levels[h][i]` is the hash of leaves [i * 2**h, (i + 1) * 2**h). In the RFC's recursion
    every left part is such a subtree, so a root or a proof for any size needs O(log n) hashes.
    Memory: about 64 bytes per leaf.
    """

    def __init__(self, leaves: Sequence[bytes] = ()) -> None:
        self._levels: list[list[bytes]] = [[]]
        for leaf in leaves:
            self.append(leaf)

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def leaf(self, index: int) -> bytes:
        return self._levels[0][index]

    def append(self, leaf: bytes) -> None:
        index, current, height = self.size, leaf, 0
        self._levels[0].append(leaf)
        while index & 1:  # this node completes a pair: its parent is complete too
            current = node_hash(self._levels[height][index - 1], current)
            height, index = height + 1, index >> 1
            if len(self._levels) == height:
                self._levels.append([])
            self._levels[height].append(current)

    def _range(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for a range that the RFC's recursion can produce."""
        n = end - start
        if n & (n - 1) == 0 and start % n == 0:
            return self._levels[n.bit_length() - 1][start // n]
        k = _split(n)
        return node_hash(self._range(start, start + k), self._range(start + k, end))

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self.size:
            raise ValueError("tree size beyond the log")

    def root(self, size: int | None = None) -> bytes:
        size = self.size if size is None else size
        self._check_size(size)
        return self._range(0, size) if size else EMPTY_ROOT

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        self._check_size(size)
        if not 0 <= index < size:
            raise ValueError("leaf index outside the tree")
        proof: list[bytes] = []
        start, end = 0, size
        while end - start > 1:
            k = _split(end - start)
            if index < start + k:
                proof.append(self._range(start + k, end))
                end = start + k
            else:
                proof.append(self._range(start, start + k))
                start += k
        return proof[::-1]

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        self._check_size(second)
        if not 0 < first <= second:
            raise ValueError("first size must be between 1 and the second size")
        proof: list[bytes] = []
        start, end, m, complete = 0, second, first, True
        while m != end - start:
            k = _split(end - start)
            if m <= k:
                proof.append(self._range(start + k, end))
                end = start + k
            else:
                proof.append(self._range(start, start + k))
                start, m, complete = start + k, m - k, False
        if not complete:
            proof.append(self._range(start, end))
        return proof[::-1]


def _shift_until_odd(fn: int, sn: int) -> tuple[int, int]:
    """Right-shift both until the lowest bit of `fn` is set or `fn` is 0 (RFC 9162 step 4b / 6b)."""
    while not fn & 1 and fn != 0:
        fn >>= 1
        sn >>= 1
    return fn, sn


def is_valid_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root_hash: bytes) -> bool:
    """RFC 9162 section 2.1.3.2."""
    # Step 1: the index lies inside the tree.
    if not 0 <= index < size:
        return False
    # Steps 2-3.
    fn, sn, r = index, size - 1, leaf
    # Step 4.
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            fn, sn = _shift_until_odd(fn, sn)
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    # Step 5.
    return sn == 0 and r == root_hash


def is_valid_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 section 2.1.4.2; equal sizes need an empty proof and equal roots."""
    if not 0 < first <= second:
        return False
    # Step 1.
    if first == second:
        return not proof and first_root == second_root
    path = list(proof)
    # Step 2: a complete first tree is its own first node.
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    if not path:
        return False
    # Steps 3-4.
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # Step 5.
    fr = sr = path[0]
    # Step 6.
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            fn, sn = _shift_until_odd(fn, sn)
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    # Step 7.
    return fr == first_root and sr == second_root and sn == 0
