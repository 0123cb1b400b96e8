"""The RFC 6962 / RFC 9162 Merkle tree: tree hashes, inclusion and consistency proofs, their verifiers.

Standard library only: the ledger builds proofs with these functions and the standalone verifier
(``python -m caseledger.verify``) checks them with the same few lines, which a reader can hold
against RFC 9162 §2.1 (hash prefixes 0x00 for a leaf, 0x01 for a node; proofs in the RFC's order,
from the leaf's neighbour up to the root's other child).

Proof generation works on any *node source*: ``range_hash(start, end)`` returns MTH of the leaves
``[start, end)``. Every range a proof names is either a complete aligned subtree (one stored node)
or ends at the tree's right edge; :func:`subtrees` splits such a range into complete subtrees, so
a store answers any proof with O(log n) node reads (:func:`proof_nodes` lists them first, to be
read in one query).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from caseledger.verify.failures import ProofError

__all__ = [
    "EMPTY_ROOT",
    "ProofError",
    "consistency_proof",
    "consistency_ranges",
    "fold",
    "inclusion_proof",
    "inclusion_ranges",
    "leaf_hash",
    "node_hash",
    "proof_nodes",
    "root_from_inclusion",
    "subtrees",
    "tree_hash",
    "verify_consistency",
    "verify_inclusion",
]

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""MTH of the empty tree: SHA-256 of the empty string."""

RangeHash = Callable[[int, int], bytes]


def leaf_hash(data: bytes) -> bytes:
    """MTH({d}) = SHA-256(0x00 || d)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n ≥ 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def tree_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH of a list of leaf hashes (already ``leaf_hash``-ed), iteratively, in O(log n) memory."""
    if not leaf_hashes:
        return EMPTY_ROOT
    stack: list[tuple[int, bytes]] = []  # (height, hash) of complete subtrees, left to right
    for h in leaf_hashes:
        height, node = 0, h
        while stack and stack[-1][0] == height:
            node = node_hash(stack.pop()[1], node)
            height += 1
        stack.append((height, node))
    node = stack.pop()[1]
    while stack:
        node = node_hash(stack.pop()[1], node)
    return node


def subtrees(start: int, end: int) -> list[tuple[int, int]]:
    """The complete subtrees ``(level, index)`` whose concatenation is ``[start, end)``, left to right.

    ``start`` must be a multiple of the largest power of two not above ``end - start`` (true of
    every range an RFC 6962 proof names); MTH of the range folds their hashes from the right.
    """
    found = []
    while start < end:
        level = (end - start).bit_length() - 1
        while start % (1 << level):
            level -= 1
        found.append((level, start >> level))
        start += 1 << level
    return found


def fold(hashes: Sequence[bytes]) -> bytes:
    """MTH of a range from its complete subtrees' hashes (left to right, sizes decreasing)."""
    node = hashes[-1]
    for h in reversed(hashes[:-1]):
        node = node_hash(h, node)
    return node


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose MTHs form PATH(index, D[size]) (RFC 9162 §2.1.3.1), in proof order."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not in a tree of size {size}")
    ranges = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index - lo < k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
    return ranges[::-1]


def consistency_ranges(old: int, new: int) -> list[tuple[int, int]]:
    """The leaf ranges whose MTHs form PROOF(old, D[new]) (RFC 9162 §2.1.4.1), in proof order."""
    if not 0 < old <= new:
        raise ProofError(f"no consistency proof from size {old} to size {new}: need 0 < old <= new")
    ranges = []
    lo, hi, m, whole = 0, new, old, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
            m -= k
            whole = False
    if not whole:
        ranges.append((lo, hi))
    return ranges[::-1]


def inclusion_proof(index: int, size: int, range_hash: RangeHash) -> list[bytes]:
    """PATH(index, D[size]) from a node source."""
    return [range_hash(a, b) for a, b in inclusion_ranges(index, size)]


def consistency_proof(old: int, new: int, range_hash: RangeHash) -> list[bytes]:
    """PROOF(old, D[new]) from a node source (empty when old == new)."""
    return [range_hash(a, b) for a, b in consistency_ranges(old, new)]


def proof_nodes(ranges: Sequence[tuple[int, int]]) -> set[tuple[int, int]]:
    """Every complete subtree ``(level, index)`` the ranges need: what a store reads for a proof."""
    return {node for a, b in ranges for node in subtrees(a, b)}


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root an inclusion proof leads to (RFC 9162 §2.1.3.2); ProofError when it is malformed."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not in a tree of size {size}")
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            raise ProofError(f"inclusion proof of leaf {index} in size {size} has {len(proof)} hashes: too many")
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
        raise ProofError(f"inclusion proof of leaf {index} in size {size} has {len(proof)} hashes: too few")
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Raise ProofError unless ``proof`` shows leaf hash ``leaf`` at ``index`` in the tree ``(size, root)``."""
    if root_from_inclusion(index, size, leaf, proof) != root:
        raise ProofError(f"inclusion proof of leaf {index} does not lead to the root of the tree of size {size}")


def verify_consistency(old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> None:
    """Raise ProofError unless ``proof`` shows the tree ``(new, new_root)`` extends ``(old, old_root)``.

    RFC 9162 §2.1.4.2; sizes equal → the roots must be equal and the proof empty.
    """
    if not 0 < old <= new:
        raise ProofError(f"no consistency proof from size {old} to size {new}: need 0 < old <= new")
    if old == new:
        if proof:
            raise ProofError("a consistency proof between equal sizes must be empty")
        if old_root != new_root:
            raise ProofError(f"two different roots for the same tree size {old}")
        return
    if not proof:
        raise ProofError(f"empty consistency proof from size {old} to size {new}")
    path = list(proof)
    if old & (old - 1) == 0:  # old is a power of two: its root is the first node
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError(f"consistency proof from {old} to {new} has too many hashes")
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
        raise ProofError(f"consistency proof from {old} to {new} has too few hashes")
    if fr != old_root:
        raise ProofError(f"consistency proof does not lead to the root of the tree of size {old}")
    if sr != new_root:
        raise ProofError(f"consistency proof does not lead to the root of the tree of size {new}")
