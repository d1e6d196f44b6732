"""The comparisons of the matching model: each field's ordered levels, defined once, run twice.

Every level has a Python predicate (the per-record scorer, registry/linkage/scoring.py) and the
same rule as DuckDB SQL (Splink's EM estimation and batch prediction, registry/linkage/
estimation.py). Levels are numbered as Splink numbers them: the "null" level (no evidence either
way: a value missing on one side, an unnamed newborn) is -1; the others count down to 0 ("else",
disagreement), so a higher level is a closer agreement. tests/test_linkage_engine.py checks that
both implementations give the same levels and match weights on the same pairs.

Compared values are prepared once per record (`prepare`): name keys and skeletons (names.py),
ISO dates, digits only. A prepared record is plaintext in memory: it is never stored, logged
or returned; only the levels (small integers) leave this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Callable

from rapidfuzz.distance import Levenshtein

from registry.linkage import names

FIELDS = ("given_name", "family_name", "birth_date", "sex", "guardian_name", "guardian_cnic", "bform", "phone", "place")
# Prepared columns (the input table of Splink; the dict keys of a prepared record)
COLUMNS = ("given_key", "given_skel", "family_key", "family_skel", "guardian_key", "guardian_skel", "bd", "bd_swap",
           "sex", "guardian_cnic", "bform", "phone", "facility", "district", "province")


def _digits(value: str | None) -> str | None:
    if not value:
        return None
    d = "".join(c for c in value if c.isdigit())
    return d or None


def _swap(d: date | None) -> str | None:
    if d is None or d.day > 12 or d.day == d.month:
        return None
    return date(d.year, d.day, d.month).isoformat()


def prepare(*, given_name: str | None, family_name: str | None, guardian_name: str | None, birth_date: date | None,
            sex: str | None, guardian_cnic: str | None, bform: str | None, phone: str | None,
            facility: str | None, district: str | None, province: str | None, unnamed: bool = False) -> dict:
    """The values compared, from a decrypted record. `unnamed` (a newborn's placeholder record)
    makes the given name absent, as a missing or "Baby of ..." given name already does."""
    gk = None if unnamed else names.key(given_name)
    fk = names.key(family_name)
    guk = names.key(guardian_name) if guardian_name else None
    phone_d = _digits(phone)
    return {
        "given_key": gk, "given_skel": names.skeleton(gk),
        "family_key": fk, "family_skel": names.skeleton(fk),
        "guardian_key": guk, "guardian_skel": names.skeleton(guk),
        "bd": birth_date.isoformat() if birth_date else None, "bd_swap": _swap(birth_date),
        "sex": sex if sex in ("female", "male", "other") else None,
        "guardian_cnic": _digits(guardian_cnic), "bform": _digits(bform),
        "phone": phone_d[-10:] if phone_d else None,
        "facility": facility, "district": district, "province": province,
    }


@dataclass(frozen=True)
class Level:
    label: str                                  # for charts and `explain` keys
    sql: str                                    # DuckDB condition over col_l / col_r
    test: Callable[[dict, dict], bool]          # the same rule over two prepared records
    null: bool = False


@dataclass(frozen=True)
class Comparison:
    field: str
    levels: tuple[Level, ...]

    def __post_init__(self) -> None:
        n = sum(1 for lv in self.levels if not lv.null)
        out, k = [], n - 1
        for lv in self.levels:
            if lv.null:
                out.append(-1)
            else:
                out.append(k)
                k -= 1
        object.__setattr__(self, "_values", tuple(out))
        object.__setattr__(self, "_tests", tuple(zip((lv.test for lv in self.levels), out)))

    def values(self) -> list[int]:
        """Splink's comparison vector values, in level order (null -1, then n-1 .. 0)."""
        return list(self._values)

    def level(self, a: dict, b: dict) -> int:
        for test, value in self._tests:
            if test(a, b):
                return value
        return 0  # pragma: no cover - the last level is always "else"


def _lev(a: str | None, b: str | None, k: int) -> bool:
    return a is not None and b is not None and Levenshtein.distance(a, b) <= k


def _null(*cols: str) -> Level:
    sql = " OR ".join(f'"{c}_l" IS NULL OR "{c}_r" IS NULL' for c in cols)
    if len(cols) == 1:  # every use: the same test without a generator per pair (dedupe scores millions)
        c = cols[0]
        return Level("null", sql, lambda a, b: a[c] is None or b[c] is None, null=True)
    return Level("null", sql, lambda a, b: any(a[c] is None or b[c] is None for c in cols), null=True)


def _exact(col: str, label: str = "exact") -> Level:
    return Level(label, f'"{col}_l" = "{col}_r"', lambda a, b: a[col] is not None and a[col] == b[col])


def _within(col: str, k: int, label: str) -> Level:
    return Level(label, f'levenshtein("{col}_l", "{col}_r") <= {k}', lambda a, b: _lev(a[col], b[col], k))


_ELSE = Level("else", "ELSE", lambda a, b: True)


def _name(field: str, prefix: str, extra: tuple[Level, ...] = ()) -> Comparison:
    k, s = f"{prefix}_key", f"{prefix}_skel"
    return Comparison(field, (_null(k), _exact(k), _exact(s, "sounds alike"), _within(k, 1, "one letter"),
                              _within(k, 2, "two letters"), *extra, _ELSE))


def _days_apart(a: dict, b: dict) -> bool:
    x, y = a["bd"], b["bd"]
    return abs((date.fromisoformat(x) - date.fromisoformat(y)).days) <= 3 or Levenshtein.distance(x, y) <= 1


_FAMILY_IS_GUARDIAN = Level(
    "guardian's name as family name",
    '"family_key_l" = "guardian_key_r" OR "family_key_r" = "guardian_key_l"',
    lambda a, b: (a["family_key"] is not None and a["family_key"] == b["guardian_key"])
    or (b["family_key"] is not None and b["family_key"] == a["guardian_key"]),
)

COMPARISONS: tuple[Comparison, ...] = (
    _name("given_name", "given"),
    _name("family_name", "family", (_FAMILY_IS_GUARDIAN,)),
    Comparison("birth_date", (
        _null("bd"), _exact("bd"),
        Level("day and month swapped", '"bd_l" = "bd_swap_r"', lambda a, b: a["bd"] == b["bd_swap"] and a["bd"] is not None),
        Level("within days or one digit",
              'abs(date_diff(\'day\', CAST("bd_l" AS DATE), CAST("bd_r" AS DATE))) <= 3 OR levenshtein("bd_l", "bd_r") <= 1',
              _days_apart),
        Level("same year", 'substr("bd_l", 1, 4) = substr("bd_r", 1, 4)', lambda a, b: a["bd"][:4] == b["bd"][:4]),
        _ELSE)),
    Comparison("sex", (_null("sex"), _exact("sex"), _ELSE)),
    _name("guardian_name", "guardian"),
    Comparison("guardian_cnic", (_null("guardian_cnic"), _exact("guardian_cnic"), _within("guardian_cnic", 1, "one digit"), _ELSE)),
    Comparison("bform", (_null("bform"), _exact("bform"), _ELSE)),
    Comparison("phone", (_null("phone"), _exact("phone"), _within("phone", 1, "one digit"), _ELSE)),
    Comparison("place", (_exact("facility", "same facility"), _exact("district", "same district"),
                         _exact("province", "same province"), _ELSE)),
)
BY_FIELD = {c.field: c for c in COMPARISONS}


def levels(a: dict, b: dict) -> dict[str, int]:
    """Comparison levels of two prepared records: {field: level}, integers only."""
    return {c.field: c.level(a, b) for c in COMPARISONS}


_distance = Levenshtein.distance


def _name_level(ka: str | None, kb: str | None, sa: str | None, sb: str | None) -> int:
    """A name comparison's level (`_name`, no extra level): null, exact, sounds alike, one, two letters."""
    if ka is None or kb is None:
        return -1
    if ka == kb:
        return 4
    if sa is not None and sa == sb:
        return 3
    d = _distance(ka, kb, score_cutoff=2)
    return 2 if d <= 1 else 1 if d <= 2 else 0


def level_vector(a: dict, b: dict) -> tuple[int, ...]:
    """`levels` as a tuple in FIELDS order, computed by one function instead of a predicate chain
    per field: the batch dedupe scores millions of pairs. The same rules as COMPARISONS, level by
    level (tests/test_dedupe_scoring_equivalence.py checks them against `levels` on a population
    that reaches every level, and fails if either side changes)."""
    # given_name
    given = _name_level(a["given_key"], b["given_key"], a["given_skel"], b["given_skel"])
    # family_name: as a name, with "the guardian's name as family name" before else
    fa, fb = a["family_key"], b["family_key"]
    if fa is None or fb is None:
        family = -1
    elif fa == fb:
        family = 5
    elif a["family_skel"] is not None and a["family_skel"] == b["family_skel"]:
        family = 4
    else:
        d = _distance(fa, fb, score_cutoff=2)
        if d <= 1:
            family = 3
        elif d <= 2:
            family = 2
        elif fa == b["guardian_key"] or fb == a["guardian_key"]:
            family = 1
        else:
            family = 0
    # birth_date
    x, y = a["bd"], b["bd"]
    if x is None or y is None:
        bd = -1
    elif x == y:
        bd = 4
    elif x == b["bd_swap"]:
        bd = 3
    elif _distance(x, y, score_cutoff=1) <= 1 or abs((date.fromisoformat(x) - date.fromisoformat(y)).days) <= 3:
        bd = 2
    elif x[:4] == y[:4]:
        bd = 1
    else:
        bd = 0
    # sex
    x, y = a["sex"], b["sex"]
    sex = -1 if x is None or y is None else 1 if x == y else 0
    guardian = _name_level(a["guardian_key"], b["guardian_key"], a["guardian_skel"], b["guardian_skel"])
    # guardian_cnic, bform, phone
    x, y = a["guardian_cnic"], b["guardian_cnic"]
    cnic = -1 if x is None or y is None else 2 if x == y else 1 if _distance(x, y, score_cutoff=1) <= 1 else 0
    x, y = a["bform"], b["bform"]
    bform = -1 if x is None or y is None else 1 if x == y else 0
    x, y = a["phone"], b["phone"]
    phone = -1 if x is None or y is None else 2 if x == y else 1 if _distance(x, y, score_cutoff=1) <= 1 else 0
    # place (no null level)
    x = a["facility"]
    if x is not None and x == b["facility"]:
        place = 3
    else:
        x = a["district"]
        if x is not None and x == b["district"]:
            place = 2
        else:
            x = a["province"]
            place = 1 if x is not None and x == b["province"] else 0
    return given, family, bd, sex, guardian, cnic, bform, phone, place


def label(field: str, level: int) -> str:
    comp = BY_FIELD[field]
    return comp.levels[comp.values().index(level)].label
