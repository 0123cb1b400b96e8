"""RFC 6962 / 9162 tree hashes and proofs against published vectors, and properties of every proof.

Vectors: transparency-dev/merkle (Go), testonly/constants.go and testonly/reference_test.go —
the leaf inputs, every root for sizes 0..8, and their reference inclusion and consistency proofs.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caseledger.verify.failures import ProofError
from caseledger.verify.rfc9162 import (
    EMPTY_ROOT,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    subtrees,
    tree_hash,
    verify_consistency,
    verify_inclusion,
)
from tests.support.examples import examples

LEAVES = [bytes.fromhex(x) for x in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                     "606162636465666768696a6b6c6d6e6f")]
ROOTS = [bytes.fromhex(x) for x in (
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]
H = bytes.fromhex
INCLUSION = [
    (0, 1, []),
    (0, 2, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"]),
    (1, 2, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]
CONSISTENCY = [
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]


def source(hashes: list[bytes]):  # type: ignore[no-untyped-def]
    """A node source over a list of leaf hashes (the reference the store is checked against)."""
    return lambda a, b: tree_hash(hashes[a:b])


def test_roots_of_the_reference_tree() -> None:
    hashes = [leaf_hash(x) for x in LEAVES]
    assert EMPTY_ROOT == ROOTS[0] == hashlib.sha256(b"").digest()
    for size, root in enumerate(ROOTS):
        assert tree_hash(hashes[:size]) == root, size


@pytest.mark.parametrize(("index", "size", "want"), INCLUSION)
def test_inclusion_proofs_of_the_reference_tree(index: int, size: int, want: list[str]) -> None:
    hashes = [leaf_hash(x) for x in LEAVES]
    proof = inclusion_proof(index, size, source(hashes))
    assert proof == [H(x) for x in want]
    verify_inclusion(index, size, hashes[index], proof, ROOTS[size])


@pytest.mark.parametrize(("old", "new", "want"), CONSISTENCY)
def test_consistency_proofs_of_the_reference_tree(old: int, new: int, want: list[str]) -> None:
    hashes = [leaf_hash(x) for x in LEAVES]
    proof = consistency_proof(old, new, source(hashes))
    assert proof == [H(x) for x in want]
    verify_consistency(old, new, ROOTS[old], ROOTS[new], proof)


def test_malformed_proofs_are_refused_with_a_reason() -> None:
    hashes = [leaf_hash(x) for x in LEAVES]
    proof = inclusion_proof(5, 8, source(hashes))
    with pytest.raises(ProofError, match="too few"):
        verify_inclusion(5, 8, hashes[5], proof[:-1], ROOTS[8])
    with pytest.raises(ProofError, match="too many"):
        verify_inclusion(5, 8, hashes[5], [*proof, proof[0]], ROOTS[8])
    with pytest.raises(ProofError, match="not in a tree"):
        verify_inclusion(8, 8, hashes[5], proof, ROOTS[8])
    with pytest.raises(ProofError, match="different roots"):
        verify_consistency(4, 4, ROOTS[4], ROOTS[5], [])
    with pytest.raises(ProofError, match="empty"):
        verify_consistency(2, 5, ROOTS[2], ROOTS[5], [])


def test_subtrees_split_a_right_edge_range_into_complete_subtrees() -> None:
    assert subtrees(0, 7) == [(2, 0), (1, 2), (0, 6)]
    assert subtrees(8, 13) == [(2, 2), (0, 12)]
    assert subtrees(0, 0) == []


sizes = st.integers(min_value=1, max_value=300)


@settings(max_examples=examples(150), deadline=None)
@given(size=sizes, data=st.data())
def test_every_inclusion_proof_verifies_and_no_tampered_one_does(size: int, data: st.DataObject) -> None:
    hashes = [leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
    root = tree_hash(hashes)
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    proof = inclusion_proof(index, size, source(hashes))
    assert len(proof) <= (size - 1).bit_length()
    verify_inclusion(index, size, hashes[index], proof, root)
    # another leaf, another index, a flipped bit in any hash, a dropped hash: refused
    with pytest.raises(ProofError):
        verify_inclusion(index, size, leaf_hash(b"forged"), proof, root)
    if size > 1:
        other = data.draw(st.integers(min_value=0, max_value=size - 1).filter(lambda i: i != index))
        with pytest.raises(ProofError):
            verify_inclusion(other, size, hashes[index], proof, root)
        at = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
        bad = [*proof]
        bad[at] = bytes([bad[at][0] ^ 1]) + bad[at][1:]
        with pytest.raises(ProofError):
            verify_inclusion(index, size, hashes[index], bad, root)
        with pytest.raises(ProofError):
            verify_inclusion(index, size, hashes[index], proof[:-1], root)


@settings(max_examples=examples(150), deadline=None)
@given(new=sizes, data=st.data())
def test_every_consistency_proof_verifies_and_no_tampered_one_does(new: int, data: st.DataObject) -> None:
    hashes = [leaf_hash(i.to_bytes(4, "big")) for i in range(new)]
    old = data.draw(st.integers(min_value=1, max_value=new))
    old_root, new_root = tree_hash(hashes[:old]), tree_hash(hashes)
    proof = consistency_proof(old, new, source(hashes))
    verify_consistency(old, new, old_root, new_root, proof)
    if old == new:
        assert proof == []
        return
    # a rewritten old leaf (rollback or rewrite) is caught, so is any altered proof hash
    changed = data.draw(st.integers(min_value=0, max_value=old - 1))
    rewritten = [*hashes]
    rewritten[changed] = leaf_hash(b"rewritten")
    with pytest.raises(ProofError):
        verify_consistency(old, new, old_root, tree_hash(rewritten), consistency_proof(old, new, source(rewritten)))
    at = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
    bad = [*proof]
    bad[at] = bytes([bad[at][0] ^ 0x80]) + bad[at][1:]
    with pytest.raises(ProofError):
        verify_consistency(old, new, old_root, new_root, bad)
    with pytest.raises(ProofError):
        verify_consistency(old, new, old_root, new_root, proof[:-1])
