"""Merkle tree hashing as in Certificate Transparency (RFC 9162 section 2.1, same as RFC 6962).

Invariants:
- SHA-256 throughout. A leaf hash is H(0x00 || data), an interior node H(0x01 || left || right),
  the hash of the empty tree is H(""). The 0x00/0x01 prefixes keep a leaf from ever being
  mistaken for an interior node (second-preimage resistance).
- The tree over n leaves splits at k, the largest power of two smaller than n (RFC 9162 MTH):
  so the tree of the first m leaves is a prefix of the tree of the first n, which is what lets
  a consistency proof show that a log was only appended to.
- Proof generation and verification follow RFC 9162 sections 2.1.3 and 2.1.4 exactly, so proofs
  from this module verify with any RFC 9162 verifier (and the reverse).
- `Tree` stores every complete level (about 2n hashes): the root of any prefix and every proof
  cost O(log n) hashes after an O(n) build; nothing is quadratic.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofError(ValueError):
    """A proof does not verify (the message says which check failed, never any data)."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH of the given leaf hashes, in O(n) with a stack of complete subtrees."""
    frontier = Frontier()
    for h in leaf_hashes:
        frontier.append(h)
    return frontier.root()


class Frontier:
    """The compact range of a tree: the roots of the complete subtrees covering [0, size), largest
    first (one per set bit of size). Appending a leaf and taking the root are O(log n)."""

    __slots__ = ("size", "hashes")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if len(hashes) != bin(size).count("1"):
            raise ValueError("a compact range holds one hash per set bit of its size")
        self.size, self.hashes = size, list(hashes)

    def append(self, h: bytes) -> None:
        self.hashes.append(h)
        self.size += 1
        n = self.size
        while n & 1 == 0:  # each trailing zero of the new size is a merge of two equal subtrees
            right = self.hashes.pop()
            self.hashes[-1] = node_hash(self.hashes[-1], right)
            n >>= 1

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        r = self.hashes[-1]
        for h in reversed(self.hashes[:-1]):
            r = node_hash(h, r)
        return r

    def pack(self) -> bytes:
        return b"".join(self.hashes)

    @classmethod
    def unpack(cls, size: int, packed: bytes) -> Frontier:
        return cls(size, [packed[i:i + HASH_SIZE] for i in range(0, len(packed), HASH_SIZE)])


class Tree:
    """All complete levels of a tree over a list of leaf hashes: levels[k][i] is the hash of the
    complete subtree of 2**k leaves starting at leaf i * 2**k."""

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        level = list(leaf_hashes)
        self.size = len(level)
        self.levels = [level]
        while len(level) > 1:
            level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            self.levels.append(level)

    def _mth(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]) for a range of the RFC decomposition (lo is aligned to the split)."""
        n = hi - lo
        if n == 0:
            return EMPTY_ROOT
        if n & (n - 1) == 0 and lo % n == 0:
            return self.levels[n.bit_length() - 1][lo // n]
        k = _split(n)
        return node_hash(self._mth(lo, lo + k), self._mth(lo + k, hi))

    def _check(self, n: int) -> None:
        if not 0 <= n <= self.size:
            raise ValueError(f"tree size {n} is outside 0..{self.size}")

    def root(self, n: int | None = None) -> bytes:
        n = self.size if n is None else n
        self._check(n)
        return self._mth(0, n)

    def inclusion_proof(self, index: int, n: int | None = None) -> list[bytes]:
        """PATH(index, D[0:n]) of RFC 9162 section 2.1.3.1, leaf-side first."""
        n = self.size if n is None else n
        self._check(n)
        if not 0 <= index < n:
            raise ValueError(f"leaf index {index} is outside tree size {n}")
        path: list[bytes] = []
        lo, hi = 0, n
        while hi - lo > 1:
            k = _split(hi - lo)
            if index < lo + k:
                path.append(self._mth(lo + k, hi))
                hi = lo + k
            else:
                path.append(self._mth(lo, lo + k))
                lo += k
        path.reverse()
        return path

    def consistency_proof(self, m: int, n: int | None = None) -> list[bytes]:
        """PROOF(m, D[0:n]) of RFC 9162 section 2.1.4.1."""
        n = self.size if n is None else n
        self._check(n)
        if not 0 <= m <= n:
            raise ValueError(f"first size {m} is outside 0..{n}")
        if m == 0 or m == n:
            return []
        path: list[bytes] = []
        lo, hi, whole = 0, n, True
        while m != hi:  # SUBPROOF(m - lo, D[lo:hi], whole)
            k = _split(hi - lo)
            if m - lo <= k:
                path.append(self._mth(lo + k, hi))
                hi = lo + k
            else:
                path.append(self._mth(lo, lo + k))
                lo, whole = lo + k, False
        if not whole:
            path.append(self._mth(lo, hi))
        path.reverse()
        return path


def _check_hashes(*hashes: bytes) -> None:
    if any(len(h) != HASH_SIZE for h in hashes):
        raise ProofError("a hash has the wrong length")


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """RFC 9162 section 2.1.3.2: the root implied by a leaf hash and its audit path."""
    _check_hashes(leaf, *proof)
    if not 0 <= index < size:
        raise ProofError("leaf index is outside the tree")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Raises ProofError unless `leaf` is at `index` in the tree of `size` leaves with `root`."""
    _check_hashes(root)
    if root_from_inclusion_proof(index, size, leaf, proof) != root:
        raise ProofError("inclusion proof does not lead to the root")


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]) -> None:
    """RFC 9162 section 2.1.4.2: raises ProofError unless the tree of `second` leaves with
    `second_root` extends the tree of `first` leaves with `first_root`."""
    _check_hashes(first_root, second_root, *proof)
    if not 0 <= first <= second:
        raise ProofError("the first tree is larger than the second")
    if first == second:
        if proof:
            raise ProofError("a consistency proof between equal sizes must be empty")
        if first_root != second_root:
            raise ProofError("equal sizes with different roots")
        return
    if first == 0:
        if proof or first_root != EMPTY_ROOT:
            raise ProofError("the empty tree has an empty proof and the empty root")
        return
    if not proof:
        raise ProofError("consistency proof is empty")
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != first_root:
        raise ProofError("consistency proof does not lead to the first root")
    if sr != second_root:
        raise ProofError("consistency proof does not lead to the second root")
