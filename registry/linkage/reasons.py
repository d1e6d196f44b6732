"""Plain-language reasons for a candidate pair, from its comparison levels (integers only).

A minimal stand-in for the matching engine's `registry.linkage.explanations.explain(levels)`
(built on another branch): `explain` uses it when it exists and falls back to this table
otherwise. Levels follow the usual Splink convention: the highest level is an exact match,
0 is "all other comparisons" (disagreement), -1 is "a value is missing". Nothing here sees a
compared value, only the level.
"""

from __future__ import annotations

_FIELDS = {
    "given_name": "given name", "family_name": "family name", "birth_date": "birth date", "sex": "sex",
    "guardian_name": "guardian's name", "guardian_cnic": "guardian's CNIC", "bform": "B-form number",
    "cnic": "CNIC", "phone": "phone number", "union_council": "union council", "facility": "home facility",
    "district": "district",
}
_WORDS = {3: "the same", 2: "nearly the same", 1: "similar"}


def _fallback(levels: dict) -> list[str]:
    out = []
    for name, level in sorted(levels.items(), key=lambda kv: (-int(kv[1]) if isinstance(kv[1], int) else 0, kv[0])):
        label = _FIELDS.get(name, name.replace("_", " "))
        if not isinstance(level, int) or level < 0:
            out.append(f"{label}: missing on one record")
        elif level == 0:
            out.append(f"{label} differs")
        else:
            out.append(f"{label} is {_WORDS.get(min(level, 3), 'similar')}")
    return out


def explain(levels: dict) -> list[str]:
    try:
        from registry.linkage import explanations  # the matching engine's, when merged
    except ImportError:
        return _fallback(levels or {})
    return list(explanations.explain(levels or {}))
