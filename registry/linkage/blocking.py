"""Blocking: which pairs of records are worth scoring, so deduplication stays sub-quadratic.

A pair is scored if the two records agree on at least one blocking rule's key. Each rule is
split into `BUCKETS` buckets by a hash of the key: a (rule, bucket) is one unit of work of a
dedupe run and the unit of its checkpoint ("given_bd:17"). A pair found by several rules is
scored once, by the first rule that finds it (as Splink does). Keys are prepared values in
memory; the block labels stored in the checkpoint name a rule and a bucket number only.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from typing import Callable, Iterator

BUCKETS = 16
MAX_BLOCK = 2000  # a key shared by more records than this carries no signal (e.g. an empty-ish name): skipped


def _year(r: dict) -> str | None:
    return r["bd"][:4] if r["bd"] else None


def _month(r: dict) -> str | None:
    return r["bd"][:7] if r["bd"] else None


def _two(a, b):
    return (a, b) if a is not None and b is not None else None


def _three(a, b, c):
    return (a, b, c) if a is not None and b is not None and c is not None else None


RULES: dict[str, Callable[[dict], tuple | None]] = {
    "given_bd": lambda r: _two(r["given_skel"], r["bd"]),
    "family_bd": lambda r: _three(r["family_skel"], r["bd"], r["sex"] or "-"),
    "guardian_bd": lambda r: _two(r["guardian_skel"], r["bd"]),
    "names_month": lambda r: _three(r["given_skel"], r["family_skel"], _month(r)),
    "guardian_names_year": lambda r: _three(r["guardian_skel"], r["given_skel"], _year(r)),
    "guardian_cnic": lambda r: (r["guardian_cnic"],) if r["guardian_cnic"] else None,
    "phone": lambda r: (r["phone"],) if r["phone"] else None,
}
# the swapped date: rules on a birth date also meet the other record's swapped date; each such
# rule's key with a given date in place of the birth date (as RULES, without copying the record)
_WITH_DATE: dict[str, Callable[[dict, str], tuple | None]] = {
    "given_bd": lambda r, d: _two(r["given_skel"], d),
    "family_bd": lambda r, d: _three(r["family_skel"], d, r["sex"] or "-"),
    "guardian_bd": lambda r, d: _two(r["guardian_skel"], d),
}
SWAPPED = set(_WITH_DATE)


def units() -> list[str]:
    return [f"{rule}:{b}" for rule in RULES for b in range(BUCKETS)]


def _bucket(key: tuple) -> int:
    """Stable across processes and runs (a checkpoint names buckets): crc32, not hash()."""
    return zlib.crc32("\x1f".join(key).encode()) % BUCKETS


def _swapped_key(rule: str, r: dict) -> tuple | None:
    """The rule's key with the swapped birth date in place of the date."""
    swap = r["bd_swap"]
    if not swap or rule not in _WITH_DATE:
        return None
    return _WITH_DATE[rule](r, swap)


def _keys(rule: str, r: dict) -> list[tuple]:
    k = RULES[rule](r)
    out = [k] if k is not None else []
    ks = _swapped_key(rule, r)
    if ks is not None:
        out.append(ks)
    return out


def keys_of(r: dict) -> list[tuple[str, tuple]]:
    """Every (rule, key) of a record, its swapped-date keys under the same rule (within_batch.py)."""
    return [(rule, k) for rule in RULES for k in _keys(rule, r)]


def _found_earlier(rule: str, a: dict, b: dict) -> bool:
    for earlier in RULES:
        if earlier == rule:
            return False
        ka, kb = _keys(earlier, a), _keys(earlier, b)
        if ka and kb and (ka[0] in kb or kb[0] in ka):
            return True
    return False  # pragma: no cover


class Index(defaultdict):
    """unit -> key -> (records whose key it is, records whose swapped-date key it is); and, for
    `pairs`, each rule's keys of every record (`own[rule][i]`, `swap[rule][i]`: the key's entry,
    the (members, swapped) pair of lists, one object a key; None where the record has no such
    key), so that "an earlier rule found this pair" is a few identity comparisons instead of
    recomputing the earlier rules' keys of both records for every pair."""

    own: list[list[tuple | None]]
    swap: list[list[tuple | None]]
    first: list[list[tuple | None]]  # own, else swap: ka[0] of `_found_earlier`


def index(records: list[dict]) -> Index:
    """Once per run: unit -> key -> (records whose key it is, records whose swapped-date key it is)."""
    out = Index(dict)
    out.own, out.swap, out.first = [], [], []
    for rule, own in RULES.items():
        own_of: list[tuple | None] = []
        add_own = own_of.append
        with_date = _WITH_DATE.get(rule)
        if with_date is None:  # no swapped-date keys (as _swapped_key)
            for i, k in enumerate(map(own, records)):
                if k is None:
                    add_own(None)
                else:
                    entry = out[f"{rule}:{_bucket(k)}"].setdefault(k, ([], []))
                    entry[0].append(i)
                    add_own(entry)
            out.own.append(own_of)
            out.swap.append([None] * len(records))
            out.first.append(own_of)
            continue
        swap_of: list[tuple | None] = []
        add_swap = swap_of.append
        for i, r in enumerate(records):  # a record's own key, then its swapped one: the order of the units' keys
            k = own(r)
            if k is None:
                add_own(None)
            else:
                entry = out[f"{rule}:{_bucket(k)}"].setdefault(k, ([], []))
                entry[0].append(i)
                add_own(entry)
            swap = r["bd_swap"]
            ks = with_date(r, swap) if swap else None  # _swapped_key
            if ks is None:
                add_swap(None)
            else:
                entry = out[f"{rule}:{_bucket(ks)}"].setdefault(ks, ([], []))
                entry[1].append(i)
                add_swap(entry)
        out.own.append(own_of)
        out.swap.append(swap_of)
        swap_only = any(o is None and s is not None for o, s in zip(own_of, swap_of))
        out.first.append([o if o is not None else s for o, s in zip(own_of, swap_of)] if swap_only else own_of)
    return out


def _earlier_test(idx: dict, rule: str, records: list[dict]) -> Callable[[int, int], bool]:
    """`_found_earlier` for records i and j, from the index's key entries when it has them. The
    same test: for an earlier rule, ka and kb (the records' keys, own then swapped) both
    non-empty and ka[0] in kb or kb[0] in ka (one entry a key: equal keys, the same entry)."""
    own_all, swap_all = getattr(idx, "own", None), getattr(idx, "swap", None)
    if own_all is None:
        return lambda i, j: _found_earlier(rule, records[i], records[j])
    position = list(RULES).index(rule)
    earlier = list(zip(idx.first[:position], own_all[:position], swap_all[:position]))

    def found(i: int, j: int) -> bool:
        for first, own, swap in earlier:
            fi = first[i]
            if fi is None:
                continue
            fj = first[j]
            if fj is None:
                continue
            if fi is own[j] or fi is swap[j] or fj is own[i] or fj is swap[i]:
                return True
        return False

    return found


def pairs(records: list[dict], idx: dict, unit: str) -> Iterator[tuple[int, int]]:
    """Index pairs (i < j) of `records` that the unit "rule:bucket" scores."""
    rule = unit.rsplit(":", 1)[0]
    found_earlier = _earlier_test(idx, rule, records)
    seen: set[tuple[int, int]] = set()
    for members, swapped in idx.get(unit, {}).values():
        if len(members) > MAX_BLOCK or not members:
            continue
        # members are in index order, so (a, b) is ordered; a pair of members is met once (only a
        # swapped-date key can meet the same pair again, under another key of the unit)
        for n, a in enumerate(members):
            for b in members[n + 1:]:
                if not found_earlier(a, b):
                    yield a, b
        for a in members:
            for b in swapped:
                if a == b:
                    continue
                pair = (a, b) if a < b else (b, a)
                if pair in seen or found_earlier(*pair):
                    continue
                seen.add(pair)
                yield pair
