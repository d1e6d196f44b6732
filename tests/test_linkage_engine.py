"""The matching engine without HTTP: name keys, the scorer against Splink, quality on a seeded
synthetic population (quality, not timing), blocking, explanations."""

from datetime import date

import pytest

from registry.demo import linkage_population as population
from registry.linkage import blocking, comparisons, estimation, names, scoring
from registry.linkage.explain import explain


@pytest.mark.parametrize("variants", [
    ["Muhammad", "Mohammad", "Muhammed", "Md", "Mohd.", "محمد"],
    ["Ayesha", "Aisha", "Aysha", "عائشہ"],
    ["Abdul Rehman", "Abdur Rahman", "abdul-rahman"],
    ["Rahmatullah", "Rahmat Ulla", "Rahmat Ullah"],
    ["Khan", "Kh.", "خان"],
    ["Fatima", "فاطمہ", "Fatimah"],
])
def test_romanisation_variants_and_urdu_meet(variants):
    """Every spelling meets on the key or, failing that, on the consonant skeleton."""
    keys = {names.key(v) for v in variants}
    skeletons = {names.skeleton(k) for k in keys}
    assert len(skeletons) == 1, skeletons


def test_urdu_letter_forms_and_diacritics_normalise():
    # Arabic yeh/kaf/heh forms and harakat give the same key as the Urdu letters
    assert names.key("علي") == names.key("علی")
    assert names.key("كريم") == names.key("کریم")
    assert names.key("مُحَمَّد") == names.key("محمد")


@pytest.mark.parametrize("placeholder", ["Baby of Sana", "B/O Sana", "baby girl", "Baby", "بے بی", "", None])
def test_unnamed_newborn_is_no_evidence(placeholder):
    assert names.key(placeholder) is None
    a = _prep(given_name=placeholder)
    b = _prep(given_name="Zainab")
    assert comparisons.levels(a, b)["given_name"] == -1  # null: neither agreement nor disagreement


def _prep(**kw):
    base = dict(given_name="Ali", family_name="Khan", guardian_name="Sana Khan", birth_date=date(2025, 3, 7), sex="male",
                guardian_cnic="35202-1234567-1", bform=None, phone="+923001234567", facility="F-LAH-01",
                district="PK-PB-LAH", province="PK-PB")
    base.update(kw)
    return comparisons.prepare(**base)


def test_birth_date_levels():
    a = _prep()
    assert comparisons.levels(a, _prep())["birth_date"] == 4
    assert comparisons.levels(a, _prep(birth_date=date(2025, 7, 3)))["birth_date"] == 3     # day and month swapped
    assert comparisons.levels(a, _prep(birth_date=date(2025, 3, 9)))["birth_date"] == 2     # two days off
    assert comparisons.levels(a, _prep(birth_date=date(2025, 8, 7)))["birth_date"] == 2     # one digit
    assert comparisons.levels(a, _prep(birth_date=date(2025, 11, 20)))["birth_date"] == 1   # same year
    assert comparisons.levels(a, _prep(birth_date=date(2022, 11, 20)))["birth_date"] == 0


def test_guardian_name_written_as_family_name_has_its_own_level():
    lv = comparisons.levels(_prep(), _prep(family_name="Sana Khan"))
    assert comparisons.label("family_name", lv["family_name"]) == "guardian's name as family name"


def test_scorer_gives_splinks_match_weights():
    """The per-record scorer applies stored m/u exactly as Splink does: same levels and same
    match weight on the same pairs, with parameters Splink estimated by EM."""
    recs = population.generate(800, seed=11)
    prep = _prepared(recs)
    params = estimation.estimate(prep, max_pairs=2e5)
    scoring.check_complete(params)
    model = scoring.Model.from_parameters("em-test", params, scoring.DEFAULT_THRESHOLDS)
    # the pairs: some true duplicates and arbitrary others
    by_entity = {}
    for p, r in zip(prep, recs):
        by_entity.setdefault(r["entity"], []).append(p)
    dups = [g for g in by_entity.values() if len(g) == 2][:15]
    left, right = [g[0] for g in dups], [g[1] for g in dups] + prep[:10]
    ref = estimation.splink_weights(params, left, right)
    assert len(ref) == len(left) * len(right)
    by_id = {p["unique_id"]: p for p in prep}
    for weight, levels, a, b in ref:
        mine = scoring.score(model, by_id[a], by_id[b])
        assert mine.levels == levels
        assert mine.weight == pytest.approx(weight, abs=1e-6)


def _prepared(recs):
    out = []
    for r in recs:
        p = comparisons.prepare(**{k: r[k] for k in ("given_name", "family_name", "guardian_name", "birth_date", "sex",
                                                      "guardian_cnic", "bform", "phone", "facility", "district", "province")})
        p["unique_id"] = r["unique_id"]
        out.append(p)
    return out


def test_quality_on_a_seeded_population():
    """Quality, not speed: F1 at the review threshold and precision of `certain` on a small
    population with injected realistic corruption (bench/matching.py runs it at scale)."""
    recs = population.generate(4000, seed=7)
    truth = population.truth_pairs(recs)
    prep = _prepared(recs)
    model = scoring.Model.from_parameters("configured-1", scoring.default_parameters(), scoring.DEFAULT_THRESHOLDS)
    idx = blocking.index(prep)
    graded, scored = {}, 0
    for unit in blocking.units():
        for i, j in blocking.pairs(prep, idx, unit):
            scored += 1
            s = scoring.score(model, prep[i], prep[j])
            if s.grade:
                graded[tuple(sorted((prep[i]["unique_id"], prep[j]["unique_id"])))] = s.grade
    found = set(graded)
    tp = len(found & truth)
    precision, recall = tp / len(found), tp / len(truth)
    assert 2 * precision * recall / (precision + recall) >= 0.9
    certain = {p for p, g in graded.items() if g == "certain"}
    assert len(certain & truth) / len(certain) >= 0.99
    assert scored < len(prep) * 5  # blocking: far from the n^2/2 pairs


def test_explain_is_plain_language_from_levels_only():
    lv = comparisons.levels(_prep(), _prep(given_name="Aly", birth_date=date(2025, 7, 3)))
    reasons = explain(lv)
    assert "birth date with day and month swapped" in reasons
    assert "guardian CNIC agrees" in reasons
    assert "same given name (or a known spelling of it)" in reasons
    assert explain({"given_name": 2, "birth_date": 4})[:2] == ["same birth date", "given name differs by one letter"]


def test_swapped_date_keys_are_the_rules_with_the_swapped_date():
    """blocking._WITH_DATE (no copy of the record per key, for speed) gives exactly the rule's
    key of the record with its swapped date as birth date, for every dated rule."""
    prep = _prepared(population.generate(1500, seed=11))
    assert blocking.SWAPPED == {"given_bd", "family_bd", "guardian_bd"}
    swapped = 0
    for r in prep:
        for rule in blocking.RULES:
            want = blocking.RULES[rule]({**r, "bd": r["bd_swap"]}) if rule in blocking.SWAPPED and r["bd_swap"] else None
            assert blocking._swapped_key(rule, r) == want
            swapped += want is not None
    assert swapped > 100


def test_lsh_banding_finds_the_similar_encodings_and_skips_most_pairs():
    """Cross-province candidates (bloom.lsh_pairs): on a seeded population, blocked by birth year
    and sex as `nhr dedupe cross-province` blocks, the pairs sharing a band hold at least 99% of
    the pairs at the `possible` similarity that comparing every pair finds, while comparing a
    small part of the pairs; two encodings of one custodian are never paired."""
    from collections import defaultdict

    from registry.linkage import bloom

    prep = _prepared(population.generate(1500, seed=5))
    keys = bloom.derive_keys(b"test-national-linkage-secret-32b")
    blocks = defaultdict(list)
    for n, p in enumerate(prep):
        blocks[(p["bd"][:4], p["sex"])].append((n, n, bloom.encode(keys, p)))  # each its own custodian
    similar, found, compared, total = set(), set(), 0, 0
    for members in blocks.values():
        total += len(members) * (len(members) - 1) // 2
        for i in range(len(members)):
            for j in range(i + 1, len(members)):
                if bloom.dice(members[i][2], members[j][2]) >= bloom.DICE_POSSIBLE:
                    similar.add((members[i][0], members[j][0]))
        pairs = bloom.lsh_pairs(members)
        compared += len(pairs)
        found |= {(members[i][0], members[j][0]) for i, j in pairs}
    assert len(similar) > 50 and len(similar & found) >= 0.99 * len(similar)
    assert compared < 0.2 * total
    one_custodian = [(n, "PK-PB", clk) for n, _, clk in next(iter(blocks.values()))]
    assert bloom.lsh_pairs(one_custodian) == set()
