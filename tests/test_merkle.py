"""RFC 9162 / RFC 6962 Merkle tree code against known answers from an established implementation,
then properties: every generated proof verifies, and any single-bit change in a proof, leaf, root
or index makes it fail."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from security.audit import merkle
from security.audit.merkle import ProofError, Tree

# Known-answer vectors copied (data only) from github.com/transparency-dev/merkle:
# testonly/constants.go (LeafInputs, RootHashes) and proof/verify_test.go (inclusionProofs,
# consistencyProofs). In inclusionProofs the Go vectors number leaves from 1; here they are 0-based.
LEAVES = [bytes.fromhex(x) for x in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f")]
ROOTS = {  # tree size -> root hash
    0: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}
INCLUSION = [  # (0-based leaf index, tree size, audit path)
    (0, 1, []),
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]
CONSISTENCY = [  # (first size, second size, proof)
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]
HASHES = [merkle.leaf_hash(x) for x in LEAVES]
TREE = Tree(HASHES)


def _root(n: int) -> bytes:
    return bytes.fromhex(ROOTS[n])


@pytest.mark.parametrize("size", range(0, 9))
def test_known_roots(size):
    assert TREE.root(size) == _root(size)
    assert merkle.root_of(HASHES[:size]) == _root(size)
    assert Tree(HASHES[:size]).root() == _root(size)


@pytest.mark.parametrize("index,size,path", INCLUSION)
def test_known_inclusion_proofs(index, size, path):
    expected = [bytes.fromhex(p) for p in path]
    assert TREE.inclusion_proof(index, size) == expected
    merkle.verify_inclusion(index, size, HASHES[index], expected, _root(size))


@pytest.mark.parametrize("first,second,path", CONSISTENCY)
def test_known_consistency_proofs(first, second, path):
    expected = [bytes.fromhex(p) for p in path]
    assert TREE.consistency_proof(first, second) == expected
    merkle.verify_consistency(first, second, _root(first), _root(second), expected)


def test_empty_and_degenerate_cases():
    assert merkle.EMPTY_ROOT == _root(0)
    merkle.verify_consistency(0, 5, merkle.EMPTY_ROOT, _root(5), [])
    with pytest.raises(ProofError):
        merkle.verify_consistency(1, 2, _root(1), _root(2), [])
    with pytest.raises(ProofError):
        merkle.verify_consistency(2, 1, _root(2), _root(1), [])
    with pytest.raises(ProofError):
        merkle.verify_inclusion(0, 0, HASHES[0], [], merkle.EMPTY_ROOT)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(1, 1, HASHES[0], [], _root(1))


def test_frontier_matches_tree_and_round_trips():
    f = merkle.Frontier()
    for i, h in enumerate(HASHES * 5):
        f.append(h)
        assert f.root() == Tree((HASHES * 5)[: i + 1]).root()
        g = merkle.Frontier.unpack(f.size, f.pack())
        assert g.root() == f.root()


def _flip(b: bytes, bit: int) -> bytes:
    bit %= len(b) * 8
    return b[: bit // 8] + bytes([b[bit // 8] ^ (1 << (bit % 8))]) + b[bit // 8 + 1:]


_leaves = st.lists(st.binary(max_size=12), min_size=1, max_size=70)


@settings(max_examples=150, deadline=None)
@given(_leaves, st.data())
def test_every_inclusion_proof_verifies_and_any_bit_flip_fails(leaves, data):
    hashes = [merkle.leaf_hash(x) for x in leaves]
    tree = Tree(hashes)
    size = data.draw(st.integers(1, len(hashes)))
    index = data.draw(st.integers(0, size - 1))
    proof, root = tree.inclusion_proof(index, size), tree.root(size)
    merkle.verify_inclusion(index, size, hashes[index], proof, root)
    bit = data.draw(st.integers(0, 255))
    with pytest.raises(ProofError):
        merkle.verify_inclusion(index, size, _flip(hashes[index], bit), proof, root)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(index, size, hashes[index], proof, _flip(root, bit))
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        with pytest.raises(ProofError):
            merkle.verify_inclusion(index, size, hashes[index], proof[:i] + [_flip(proof[i], bit)] + proof[i + 1:], root)
    other = index ^ (1 << data.draw(st.integers(0, 7)))
    if other != index and (other >= size or hashes[other] != hashes[index]):
        with pytest.raises(ProofError):
            merkle.verify_inclusion(other, size, hashes[index], proof, root)


@settings(max_examples=150, deadline=None)
@given(_leaves, st.data())
def test_every_consistency_proof_verifies_and_any_bit_flip_fails(leaves, data):
    hashes = [merkle.leaf_hash(x) for x in leaves]
    tree = Tree(hashes)
    second = data.draw(st.integers(1, len(hashes)))
    first = data.draw(st.integers(1, second))
    proof, r1, r2 = tree.consistency_proof(first, second), tree.root(first), tree.root(second)
    merkle.verify_consistency(first, second, r1, r2, proof)
    bit = data.draw(st.integers(0, 255))
    with pytest.raises(ProofError):
        merkle.verify_consistency(first, second, _flip(r1, bit), r2, proof)
    with pytest.raises(ProofError):
        merkle.verify_consistency(first, second, r1, _flip(r2, bit), proof)
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        with pytest.raises(ProofError):
            merkle.verify_consistency(first, second, r1, r2, proof[:i] + [_flip(proof[i], bit)] + proof[i + 1:])
        with pytest.raises(ProofError):
            merkle.verify_consistency(first, second, r1, r2, proof[:-1])


def test_proofs_scale_to_a_large_tree():
    """O(log n) per proof after an O(n) build: a few thousand proofs over 2**17 + 3 leaves."""
    n = (1 << 17) + 3
    hashes = [i.to_bytes(32, "big") for i in range(n)]
    tree = Tree(hashes)
    root = tree.root()
    for index in range(0, n, 97):
        merkle.verify_inclusion(index, n, hashes[index], tree.inclusion_proof(index), root)
    for first in range(1, n, 4099):
        merkle.verify_consistency(first, n, tree.root(first), root, tree.consistency_proof(first))
