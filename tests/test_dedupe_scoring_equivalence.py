"""The batch dedupe's fast scorer gives exactly what the reference scorer gives (issue 13).

`dedupe.score_unit` computes a pair's levels with one function (comparisons.level_vector), its
weight by table lookups (Model.vector_weight), and "already found by an earlier blocking rule"
from the keys numbered in the blocking index. The reference is the model as written once:
the predicate chain of every comparison (comparisons.levels), `scoring.score`, and the pairs of
each unit as `blocking.pairs` generated them with `_found_earlier` recomputing the earlier
rules' keys (reproduced below). On a generated population (its injected duplicates reach every
level of every comparison, which is checked) both must give the same pairs in the same order,
the same levels, the same floats and the same grades; and a change to one level of the
reference makes the comparison fail (so the check can see a change on either side).
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from registry.demo import linkage_population as population
from registry.linkage import blocking, comparisons, dedupe, scoring


def _prepared(recs: list[dict]) -> list[dict]:
    out = []
    for r in recs:
        p = comparisons.prepare(given_name=r["given_name"], family_name=r["family_name"], guardian_name=r["guardian_name"],
                                birth_date=r["birth_date"], sex=r["sex"], guardian_cnic=r["guardian_cnic"], bform=r["bform"],
                                phone=r["phone"], facility=r["facility"], district=r["district"], province=r["province"])
        out.append(p)
    return out


def _one_digit_off(value: str | None) -> str | None:
    if not value:
        return value
    k = next((n for n in range(len(value) - 1, -1, -1) if value[n].isdigit()), None)
    return value if k is None else value[:k] + str((int(value[k]) + 1) % 10) + value[k + 1:]


# what the generator never does, each applied to a copy of some children (which still share
# blocking keys with the original): missing values, one digit off in a CNIC or phone
_EDGES = (
    {"birth_date": None}, {"sex": None}, {"guardian_name": None}, {"given_name": None}, {"family_name": None},
    {"bform": None}, {"phone": None}, {"guardian_cnic": None},
    lambda r: {"guardian_cnic": _one_digit_off(r["guardian_cnic"])}, lambda r: {"phone": _one_digit_off(r["phone"])},
    lambda r: {"facility": None, "district": None}, lambda r: {"facility": None, "district": None, "province": "PK-SD"},
)


@pytest.fixture(scope="module")
def prep() -> list[dict]:
    # one province (denser blocks, as `nhr dedupe run` meets them), the all-province mix, edge cases
    recs = population.generate(6000, seed=13, province="PK-PB") + population.generate(3000, seed=14)
    edges = [{**r, **(e(r) if callable(e) else e)} for n, r in enumerate(recs[:600]) for e in (_EDGES[n % len(_EDGES)],)]
    return _prepared(recs + edges)


def _reference_pairs(records: list[dict], idx: dict, unit: str):
    """`blocking.pairs` as it was before the index numbered keys (main at a27f397)."""
    rule = unit.rsplit(":", 1)[0]
    seen: set[tuple[int, int]] = set()
    for members, swapped in idx.get(unit, {}).values():
        if len(members) > blocking.MAX_BLOCK or not members:
            continue
        candidates = [(a, b) for n, a in enumerate(members) for b in members[n + 1:]]
        candidates += [(a, b) for a in members for b in swapped if a != b]
        for a, b in candidates:
            pair = (a, b) if a < b else (b, a)
            if pair in seen or blocking._found_earlier(rule, records[pair[0]], records[pair[1]]):
                continue
            seen.add(pair)
            yield pair


def _reference_unit(model, records, idx, unit):
    n, graded = 0, []
    for i, j in _reference_pairs(records, idx, unit):
        n += 1
        sc = scoring.score(model, records[i], records[j])
        if sc.grade is not None:
            graded.append((i, j, sc))
    return unit, n, graded


def _models() -> list[scoring.Model]:
    """The configured model and one with other parameters (as EM would give): every weight a
    different float, so a sum in another order would show."""
    rng = random.Random(5)
    params = scoring.default_parameters()
    for levels in params["fields"].values():
        for p in levels.values():
            p["m"] = min(1.0, p["m"] * rng.uniform(0.7, 1.3))
            p["u"] = min(1.0, p["u"] * rng.uniform(0.7, 1.3))
    return [scoring.Model.from_parameters("configured", scoring.default_parameters(), scoring.DEFAULT_THRESHOLDS),
            scoring.Model.from_parameters("perturbed", params, {"certain": 11.0, "probable": 5.0, "possible": -3.0})]


def _differences(prep: list[dict]) -> int:
    """Pairs (and units) on which the fast scorer and the reference disagree, for both models."""
    idx = blocking.index(prep)
    plain = {unit: dict(blocks) for unit, blocks in idx.items()}  # the same index, without the numbered keys
    differ = 0
    for model in _models():
        for unit in blocking.units():
            fast = dedupe.score_unit(unit, (prep, idx, model))
            if list(blocking.pairs(prep, idx, unit)) != list(_reference_pairs(prep, plain, unit)):
                differ += 1
            ref = _reference_unit(model, prep, plain, unit)
            if fast[1] != ref[1] or len(fast[2]) != len(ref[2]):
                differ += 1
                continue
            for (i, j, a), (k, m, b) in zip(fast[2], ref[2]):
                if (i, j) != (k, m) or a != b or repr(a.weight) != repr(b.weight) or repr(a.probability) != repr(b.probability):
                    differ += 1
    # levels of pairs no rule blocks together as well (neighbours in the list): every comparison's
    # levels, graded or not
    for i in range(len(prep) - 1):
        a, b = prep[i], prep[(i * 7919 + 1) % len(prep)]
        if comparisons.level_vector(a, b) != tuple(comparisons.levels(a, b).values()):
            differ += 1
    return differ


def test_fast_scorer_equals_the_reference_on_a_population(prep):
    assert tuple(c.field for c in comparisons.COMPARISONS) == comparisons.FIELDS
    assert _differences(prep) == 0


def test_the_population_reaches_every_level_of_every_comparison(prep):
    """So a change to any level's rule, on either side, changes some pair's level here."""
    idx = blocking.index(prep)
    reached: dict[str, set[int]] = {c.field: set() for c in comparisons.COMPARISONS}
    for unit in blocking.units():
        for i, j in blocking.pairs(prep, idx, unit):
            for f, lv in comparisons.levels(prep[i], prep[j]).items():
                reached[f].add(lv)
    for i in range(len(prep) - 1):
        for f, lv in comparisons.levels(prep[i], prep[(i * 7919 + 1) % len(prep)]).items():
            reached[f].add(lv)
    missing = {c.field: sorted(set(c.values()) - reached[c.field]) for c in comparisons.COMPARISONS
               if set(c.values()) - reached[c.field]}
    assert not missing, missing


@pytest.mark.parametrize("field,label,test", [
    ("guardian_cnic", "one digit", lambda a, b: False),
    ("birth_date", "same year", lambda a, b: a["bd"][:7] == b["bd"][:7]),
    ("family_name", "guardian's name as family name",
     lambda a, b: a["family_key"] is not None and a["family_key"] == b["guardian_key"]),
])
def test_a_changed_level_is_seen(prep, monkeypatch, field, label, test):
    """One level of the reference changed (wider, narrower, one-sided): the equality fails."""
    comp = comparisons.BY_FIELD[field]
    levels = tuple(replace(lv, test=test) if lv.label == label else lv for lv in comp.levels)
    assert levels != comp.levels
    changed = comparisons.Comparison(field, levels)
    monkeypatch.setattr(comparisons, "COMPARISONS",
                        tuple(changed if c.field == field else c for c in comparisons.COMPARISONS))
    assert _differences(prep) > 0


def test_blocking_pairs_without_numbered_keys_fall_back(prep):
    """An index without the numbered keys (built elsewhere) still gives the same pairs."""
    idx = blocking.index(prep)
    plain = {unit: dict(blocks) for unit, blocks in idx.items()}
    for unit in blocking.units()[::9]:
        assert list(blocking.pairs(prep, idx, unit)) == list(blocking.pairs(prep, plain, unit))
