"""Field-level Bloom-filter encodings for linkage across provinces (model `fbf-1`), scored as the
in-custody engine scores: per-field comparison levels, Fellegi-Sunter weights, grades.

The record-level CLK (bloom.encode) mixes every field into one filter, so the comparer can only
tell "similar overall" (review F1 0.88 on the bench population). Here each field has its own
encoding, so the comparer can tell *which* fields agree and how closely, and weigh them with the
engine's m and u probabilities (scoring.DEFAULT_LEVELS) and thresholds (scoring.DEFAULT_THRESHOLDS).

Per record, keyed by the national linkage secret (bloom.derive_keys) and **salted with the
record's block** (birth year and sex, which the comparer already sees and within which alone it
compares), so the same name sets different bits in another block:

- given, family and guardian name: a Bloom filter of the character bigrams of the name key
  (names.key: romanisation variants and Urdu meet), FIELD_L bits, FIELD_K bits a bigram by
  double hashing (one HMAC-SHA256 a feature, split into h1 and h2), XOR-folded once to
  FIELD_L / 2 bits; plus a 16-bit keyed token of the name's consonant skeleton (names.skeleton:
  "sounds alike", e.g. Urdu محمد and Muhammad). Family and guardian names share their hashing,
  so "the family name of one is the guardian's name of the other" can be seen;
- birth date: four 16-bit keyed tokens of the month and day (the year is in the block): the
  date, the unordered {day, month} (day and month swapped), and the day of the year in weeks on
  two grids half a week apart (two dates at most 3 days apart share at least one of them);
- sex is not encoded (it is in the block). No guardian CNIC, phone, B-form or place: see
  docs/linkage.md, "Field-level encodings".

Packed as one blob a record (MAGIC, a presence byte, the three folded filters, the three
skeleton tokens, the four date tokens): `pack`/`unpack`. `levels(a, b)` gives the engine's
comparison levels (comparisons.py numbering) from two encodings; `score` weighs them.
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass
from datetime import date

from registry.linkage import bloom, scoring

MAGIC = b"F1"
FIELD_L = 256
FIELD_K = 12
FIELD_BYTES = FIELD_L // 16  # folded: FIELD_L / 2 bits
NAMES = ("given", "family", "guardian")
DATE_TOKENS = ("md", "dm", "wa", "wb")
_FMT = f">2sB{3 * FIELD_BYTES}s3H4H"
SIZE = struct.calcsize(_FMT)

# Name Dice (of the folded filters) for the engine's "one letter" and "two letters" levels: a
# substitution in an n-letter key changes 2 of its n + 1 bigrams, so bigram Dice (n - 1) / (n + 1)
# (0.71 at n = 6) and (n - 3) / (n + 1) for two; the filters' collisions add some. Chosen on the
# bench population (bench/RESULTS.md, 2026-12-03 bloomq entry): 0.75 / 0.55 let two names
# sharing a word ("fatima khan", "ayesha khan") count as "two letters" apart, too many false
# pairs at 46k records; 0.8 / 0.65 keep review F1 >= 0.96 at 9k and 46k records.
DICE_ONE, DICE_TWO = 0.8, 0.65


@dataclass(frozen=True)
class FieldEncoding:
    names: tuple[int, int, int]          # folded filters of given, family, guardian (0: absent)
    skeletons: tuple[int, int, int]      # 16-bit tokens (meaningful only when the filter is not 0)
    date: tuple[int, int, int, int] | None


def _hashes(key: bytes, salt: str, feature: str) -> tuple[int, int]:
    d = hmac.digest(key, f"{salt}|{feature}".encode(), "sha256")
    return int.from_bytes(d[:8], "big"), int.from_bytes(d[8:16], "big") | 1


def _token(key: bytes, salt: str, feature: str) -> int:
    return int.from_bytes(hmac.digest(key, f"{salt}|{feature}".encode(), "sha256")[:2], "big")


def _bigrams(text: str) -> set[str]:
    padded = f"_{text}_"
    return {padded[i:i + 2] for i in range(len(padded) - 1)}


def _name_filter(key: bytes, salt: str, value: str | None) -> int:
    if not value:
        return 0
    bits = 0
    for g in _bigrams(value):
        h1, h2 = _hashes(key, salt, "n:" + g)
        for i in range(FIELD_K):
            bits |= 1 << ((h1 + i * h2) % FIELD_L)
    half = FIELD_L // 2
    return (bits >> half) ^ (bits & ((1 << half) - 1))


def date_features(bd: str | None) -> tuple[str, str, str, str] | None:
    """The compared parts of an ISO birth date (year left out: it is in the block)."""
    if not bd:
        return None
    d = date.fromisoformat(bd)
    doy = d.timetuple().tm_yday
    lo, hi = sorted((d.month, d.day))
    return (f"md:{d.month}-{d.day}", f"dm:{lo}-{hi}", f"wa:{doy // 7}", f"wb:{(2 * doy + 7) // 14}")


def block_of(rec: dict) -> str:
    """The comparer's block of a prepared record: birth year and sex (as cross_province stores it)."""
    return f"{rec['bd'][:4]}:{rec['sex']}"


def encode(keys: tuple[bytes, bytes], rec: dict, block: str | None = None) -> FieldEncoding:
    """The field-level encoding of a prepared record (comparisons.prepare). `block` is the salt
    (birth year and sex, block_of(rec) by default): only encodings of one block are comparable."""
    k_name, k_tok = keys
    salt = block if block is not None else block_of(rec)
    filters, skels = [], []
    for n, field in enumerate(NAMES):
        value = rec.get(f"{field}_key")
        ns = salt if n else salt + "|given"  # family and guardian share hashing (guardian's name as family name)
        filters.append(_name_filter(k_name, ns, value))
        skel = rec.get(f"{field}_skel")
        skels.append(_token(k_tok, ns, "s:" + skel) if value and skel else 0)
    feats = date_features(rec.get("bd"))
    dt = tuple(_token(k_tok, salt, f) for f in feats) if feats else None
    return FieldEncoding(tuple(filters), tuple(skels), dt)  # type: ignore[arg-type]


def pack(enc: FieldEncoding) -> bytes:
    present = sum(1 << n for n, f in enumerate(enc.names) if f) | (8 if enc.date else 0)
    body = b"".join(f.to_bytes(FIELD_BYTES, "big") for f in enc.names)
    return struct.pack(_FMT, MAGIC, present, body, *enc.skeletons, *(enc.date or (0, 0, 0, 0)))


def unpack(raw: bytes) -> FieldEncoding | None:
    """The encoding in a stored blob, or None for a blob of another model (a record-level CLK of
    `clk-1`): those are re-encoded by `nhr dedupe encode`, never compared with these."""
    if len(raw) != SIZE or raw[:2] != MAGIC:
        return None
    _, present, body, *rest = struct.unpack(_FMT, raw)
    filters = tuple(int.from_bytes(body[n * FIELD_BYTES:(n + 1) * FIELD_BYTES], "big") if present & (1 << n) else 0
                    for n in range(3))
    return FieldEncoding(filters, tuple(rest[:3]), tuple(rest[3:]) if present & 8 else None)  # type: ignore[arg-type]


def dice(a: int, b: int) -> float:
    na, nb = a.bit_count(), b.bit_count()
    return 2 * (a & b).bit_count() / (na + nb) if na + nb else 0.0


def _name_level(fa: int, fb: int, sa: int, sb: int, top: int) -> int:
    """Engine numbering: top exact, top-1 sounds alike, top-2 one letter, top-3 two letters."""
    if fa == fb:
        return top
    if sa == sb:
        return top - 1
    d = dice(fa, fb)
    return top - 2 if d >= DICE_ONE else top - 3 if d >= DICE_TWO else -2  # -2: below "two letters"


def levels(a: FieldEncoding, b: FieldEncoding) -> dict[str, int]:
    """Comparison levels of two encodings of one block, numbered as comparisons.COMPARISONS."""
    out: dict[str, int] = {}
    (ga, fa, ua), (gb, fb, ub) = a.names, b.names
    out["given_name"] = -1 if not (ga and gb) else max(0, _name_level(ga, gb, a.skeletons[0], b.skeletons[0], 4))
    if not (fa and fb):
        out["family_name"] = -1
    else:
        lv = _name_level(fa, fb, a.skeletons[1], b.skeletons[1], 5)
        if lv < 4 and (fa == ub or fb == ua):
            # the guardian's name as the family name, checked before the Dice levels: "qureshi" and
            # "sana qureshi" have a bigram Dice of "two letters" though they are five apart
            lv = 1
        out["family_name"] = max(lv, 0)
    out["guardian_name"] = -1 if not (ua and ub) else max(0, _name_level(ua, ub, a.skeletons[2], b.skeletons[2], 4))
    if a.date is None or b.date is None:
        out["birth_date"] = -1
    else:
        (ma, da, wa, wb), (mb, db, xa, xb) = a.date, b.date
        out["birth_date"] = 4 if ma == mb else 3 if da == db else 2 if (wa == xa or wb == xb) else 1
    out["sex"] = 1  # the block
    return out


MODEL = scoring.Model.from_parameters("fbf-1", scoring.default_parameters(), scoring.DEFAULT_THRESHOLDS)
# Encodings in a block (birth year and sex, all custodians) for which MODEL's prior holds: the
# bench's 9k population (about 770 a block) had review precision 0.99 with it, 46k (about 3,800 a
# block) 0.96 (bench/RESULTS.md 2026-12-03 10:45). A larger block gets the prior of its size:
# expected matching pairs / pairs in the block (priors.py), so precision holds as blocks grow.
PRIOR_BLOCK_RECORDS = 1_000


def model_for_block(n: int) -> scoring.Model:
    """MODEL with the prior of a block of `n` encodings."""
    from registry.linkage import priors

    return priors.for_population(MODEL, n, PRIOR_BLOCK_RECORDS)


def score(a: FieldEncoding, b: FieldEncoding, model: scoring.Model = MODEL) -> scoring.Scored:
    """Levels, Fellegi-Sunter weight, probability and grade of two encodings (fields not encoded:
    CNIC, phone, B-form, place, are no evidence either way)."""
    lv = levels(a, b)
    w = model.weight(lv)
    return scoring.Scored(lv, w, scoring.probability(w), model.grade(w))


def candidate_keys(enc: FieldEncoding) -> list[tuple]:
    """The comparer's blocking keys of an encoding, within its block: each birth-date token (the
    date, day and month swapped, either week grid: 99% of the bench's true pairs share one), and
    each two of the three name filters agreeing exactly (the duplicates whose date drifted
    further). Two encodings are compared only if they share a key."""
    out: list[tuple] = [(k, t) for k, t in enumerate(enc.date)] if enc.date else []
    g, f, u = enc.names
    for k, (x, y) in enumerate(((g, f), (g, u), (f, u)), start=4):
        if x and y:
            out.append((k, x, y))
    return out


def candidate_pairs(members: list[tuple]) -> set[tuple[int, int]]:
    """Index pairs (i < j) of `members` ((id, custodian, encoding), ...) of one block, of
    different custodians, that share a candidate key (as bloom.lsh_pairs does for CLKs)."""
    return bloom.pairs_sharing_a_key(members, candidate_keys)
