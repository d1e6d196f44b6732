"""Term-frequency adjustment of exact name agreement (Splink's term-frequency adjustments).

Two records that agree exactly on a common given name (Muhammad, Fatima) are weaker evidence
than two that agree on a rare one: by chance, two different children share the value v with
probability about f(v)^2, where f(v) is its share of the records. The model's u of "exact
agreement" averages this over all values; Splink replaces it, per pair, by the value's own
frequency. Here the exact-agreement weight log2(m / u) becomes

    log2(m / u) + log2(u_table / f(v))        u_table = sum over values of f(v)^2

so over the pairs agreeing by chance (value v with probability f(v)^2) its Bayes factor
u_table / f(v) averages to sum f(v) = 1: the model's u and its calibration are kept, only how
exact agreement is shared between common and rare names changes. It is negative for a common
name and positive for a rare one, and bounded by MAX_BITS either way (a value seen twice in a
province is not proof).

The table is built in memory by the process that already holds the province's prepared records
(`nhr dedupe run`), from those records only: counts keyed by a salted hash of the name key
(the salt is random, per table, and never stored), never a name. It is not stored, logged,
sent to workers other than by fork, or shared with another province. Only the bucket of the
adjustment (common / rare: `FREQUENCY_LEVELS`) is added to a pair's levels, so stewards' reasons
(explain.py) say why a same-name pair weighs less or more.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field as dc_field

# Name comparisons adjusted: field -> (prepared key column, the level of exact agreement)
ADJUSTED = {"given_name": ("given_key", 4), "family_name": ("family_key", 5), "guardian_name": ("guardian_key", 4)}
MAX_BITS = 3.0
# An adjustment of at least this many bits either way is shown to stewards as a level
SHOWN_BITS = 1.0
FREQUENCY_LEVELS = {f: f"{f}_frequency" for f in ADJUSTED}  # level key -> 1 rare, -1 common


@dataclass(frozen=True)
class Table:
    salt: bytes
    counts: dict[str, dict[int, int]]      # column -> salted hash of the value -> records
    totals: dict[str, int]                 # column -> records with a value
    expected: dict[str, float]             # column -> sum of f(v)^2
    # field -> the process's hash() of a value -> its adjustment: scoring looks a value up once
    # per run instead of hashing it per pair (Python caches a string's hash on the string)
    memo: dict[str, dict[int, float]] = dc_field(default_factory=lambda: {f: {} for f in ADJUSTED}, compare=False)

    def adjustment(self, field: str, value: str) -> float:
        col = ADJUSTED[field][0]
        n = self.totals.get(col, 0)
        c = self.counts[col].get(_h(self.salt, value), 0) if n else 0
        if c < 2:  # agreeing values are in the table at least twice; otherwise no table evidence
            return 0.0
        return max(-MAX_BITS, min(MAX_BITS, math.log2(self.expected[col] * n / c)))


def _h(salt: bytes, value: str) -> int:
    return int.from_bytes(hashlib.blake2b(value.encode(), key=salt, digest_size=8).digest(), "big")


def build(records: Iterable[dict]) -> Table:
    """A table of the prepared records' name keys (counts of salted hashes only)."""
    salt = os.urandom(16)
    counts = {col: Counter() for col, _ in ADJUSTED.values()}
    for r in records:
        for col, c in counts.items():
            v = r.get(col)
            if v:
                c[_h(salt, v)] += 1
    totals = {col: sum(c.values()) for col, c in counts.items()}
    expected = {col: (sum(k * k for k in c.values()) / totals[col] ** 2 if totals[col] else 0.0) for col, c in counts.items()}
    return Table(salt, {col: dict(c) for col, c in counts.items()}, totals, expected)


def adjust(table: Table, a: dict, levels: dict[str, int]) -> tuple[float, dict[str, int]]:
    """(bits to add to the match weight, frequency levels to add to the pair's levels) of a pair
    of prepared records with comparison `levels`; `a` is either record (they agree)."""
    bits, shown = 0.0, {}
    for field, (col, exact) in ADJUSTED.items():
        if levels.get(field) == exact:
            v = a[col]
            memo = table.memo[field]
            d = memo.get(hash(v))
            if d is None:
                d = memo[hash(v)] = table.adjustment(field, v)
            bits += d
            if d <= -SHOWN_BITS:
                shown[FREQUENCY_LEVELS[field]] = -1
            elif d >= SHOWN_BITS:
                shown[FREQUENCY_LEVELS[field]] = 1
    return bits, shown
