"""Cryptographic long-term keys (CLKs): Bloom-filter encodings for linkage across provinces.

Each province encodes its own records (in its process, with its keys); the national layer
compares encodings only and proposes pairs to both provinces' stewards (source
`cross_province`). Neither province sees the other's names until a steward with capture scope
opens the pair. See docs/linkage.md for what this protects and what it does not.

Encoding (Schnell, Bachteler and Reiher 2009; the CLK of Schnell 2011), as clkhash does it:
- features: character bigrams of the name keys (given, family, guardian: names.key, so
  romanisation variants and Urdu meet), the birth date's year, month and day, the day/month
  swapped date, sex; each feature prefixed with its field, so "ali" as a given name and as a
  family name set different bits;
- each feature sets K bits chosen by double hashing with two HMAC-SHA256 keys derived from the
  national linkage secret (g_i = h1 + i*h2 mod L): without the secret, no one can compute a
  record's bits (keyed hashing against dictionary attacks);
- the L = 1024 bit filter is XOR-folded once to 512 bits (Schnell et al. 2016): each stored bit
  mixes two positions, which breaks the bit-to-bigram mapping that pattern-mining attacks use.

Since model `fbf-1` (2026-12-03) `nhr dedupe encode` stores field-level encodings instead
(bloom_fields.py: per-field filters and tokens scored with the engine's levels, review F1 0.98
against 0.88 here); this record-level CLK stays for comparison (bench/matching.py --bloom) and as
the more private, less accurate option (docs/linkage.md, "Field-level encodings"); derive_keys is
shared by both.

Why not clkhash/anonlink: clkhash 0.18 pins `cryptography<41` (the registry needs >= 43), and
anonlink adds numpy and a Cython build for what is, here, a popcount; the Dice coefficient on
Python integers (`int.bit_count`) does the same computation.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import date

L = 1024
K = 20
FOLDED = L // 2
DICE_CERTAIN, DICE_PROBABLE, DICE_POSSIBLE = 0.92, 0.85, 0.78


def derive_keys(secret: bytes) -> tuple[bytes, bytes]:
    return (hmac.new(secret, b"nhr-clk-h1", hashlib.sha256).digest(),
            hmac.new(secret, b"nhr-clk-h2", hashlib.sha256).digest())


def _bigrams(text: str | None) -> list[str]:
    if not text:
        return []
    padded = f"_{text}_"
    return [padded[i:i + 2] for i in range(len(padded) - 1)]


def features(rec: dict) -> list[str]:
    """The features of a prepared record (comparisons.prepare)."""
    out = []
    for field in ("given_key", "family_key", "guardian_key"):
        out += [f"{field[0]}:{g}" for g in _bigrams(rec.get(field))]
    if rec.get("bd"):
        d = date.fromisoformat(rec["bd"])
        out += [f"y:{d.year}", f"m:{d.month}", f"d:{d.day}"]
        if rec.get("bd_swap"):
            out.append(f"s:{rec['bd_swap']}")
    if rec.get("sex"):
        out.append(f"x:{rec['sex']}")
    return out


def encode(keys: tuple[bytes, bytes], rec: dict) -> int:
    """The folded CLK of a record, as an integer of FOLDED bits."""
    k1, k2 = keys
    bits = 0
    for f in features(rec):
        fb = f.encode()
        h1 = int.from_bytes(hmac.new(k1, fb, hashlib.sha256).digest()[:8], "big")
        h2 = int.from_bytes(hmac.new(k2, fb, hashlib.sha256).digest()[:8], "big")
        for i in range(K):
            bits |= 1 << ((h1 + i * h2) % L)
    return (bits >> FOLDED) ^ (bits & ((1 << FOLDED) - 1))


def to_bytes(clk: int) -> bytes:
    return clk.to_bytes(FOLDED // 8, "big")


def from_bytes(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def dice(a: int, b: int) -> float:
    na, nb = a.bit_count(), b.bit_count()
    return 2 * (a & b).bit_count() / (na + nb) if na + nb else 0.0


# LSH banding (bit sampling for Hamming distance, as anonlink's blocking does): the folded CLK cut
# into LSH_BANDS disjoint bands of LSH_ROWS bits (its bits are set by keyed hashes, so adjacent
# bits are as independent as sampled ones); two encodings are compared only if they agree on a
# whole band. A pair agreeing on a fraction s of its bits meets with probability
# 1 - (1 - s^ROWS)^BANDS: about 0.99 at the `possible` threshold (Dice 0.78 is about s = 0.79 at
# this fill), a few percent for unrelated children (s about 0.56). bench/matching.py --bloom
# measures both against comparing every pair of the block.
LSH_ROWS = 10
LSH_BANDS = FOLDED // LSH_ROWS


def bands(clk: int) -> list[tuple[int, int]]:
    """(band number, band value) of an encoding."""
    mask = (1 << LSH_ROWS) - 1
    return [(j, (clk >> (j * LSH_ROWS)) & mask) for j in range(LSH_BANDS)]


def lsh_pairs(members: list[tuple]) -> set[tuple[int, int]]:
    """Index pairs (i < j) of `members` ((id, custodian, clk), ...) of different custodians that
    share at least one band: the candidates of one block."""
    return pairs_sharing_a_key(members, bands)


def pairs_sharing_a_key(members: list[tuple], keys_of) -> set[tuple[int, int]]:
    """Index pairs (i < j) of `members` ((id, custodian, encoding), ...) of different custodians
    that share at least one of `keys_of(encoding)`."""
    buckets: dict[tuple, list[int]] = {}
    for i, (_, _, enc) in enumerate(members):
        for key in keys_of(enc):
            buckets.setdefault(key, []).append(i)
    out: set[tuple[int, int]] = set()
    for ids in buckets.values():
        if len(ids) < 2:
            continue
        for n, a in enumerate(ids):
            ca = members[a][1]
            for b in ids[n + 1:]:
                if members[b][1] != ca:
                    out.add((a, b))
    return out


def grade(similarity: float) -> str | None:
    if similarity >= DICE_CERTAIN:
        return "certain"
    if similarity >= DICE_PROBABLE:
        return "probable"
    if similarity >= DICE_POSSIBLE:
        return "possible"
    return None
