"""Field-level Bloom-filter encodings for cross-province linkage (registry/linkage/bloom_fields.py):
the blob, the levels read from two encodings, the Fellegi-Sunter score, the candidate keys, and
the quality on a seeded population. Deterministic: fixed secrets, fixed records."""

from __future__ import annotations

from collections import defaultdict
from datetime import date

from registry.demo import linkage_population as population
from registry.linkage import bloom, bloom_fields, comparisons
from registry.linkage.explain import explain

KEYS = bloom.derive_keys(b"test-national-linkage-secret-32b")


def _rec(given="Muhammad Usman", family="Qureshi", guardian="Sana Qureshi", born=date(2024, 3, 7), sex="male"):
    return comparisons.prepare(given_name=given, family_name=family, guardian_name=guardian, birth_date=born, sex=sex,
                               guardian_cnic="35202-1234567-1", bform=None, phone="+923001234567",
                               facility="F1", district="PK-PB-LHR", province="PK-PB")


def _enc(**kw):
    return bloom_fields.encode(KEYS, _rec(**kw))


def test_one_blob_a_record_round_trips_and_older_blobs_are_not_read():
    enc = _enc()
    raw = bloom_fields.pack(enc)
    assert len(raw) == bloom_fields.SIZE and bloom_fields.unpack(raw) == enc
    assert bloom_fields.pack(_enc()) == raw  # deterministic
    old_clk = bloom.to_bytes(bloom.encode(KEYS, _rec()))  # a clk-1 record-level CLK
    assert bloom_fields.unpack(old_clk) is None
    missing = bloom_fields.encode(KEYS, {**_rec(family=None), "guardian_key": None})
    back = bloom_fields.unpack(bloom_fields.pack(missing))
    assert back == missing and back.names[1] == back.names[2] == 0


def test_the_blob_holds_no_value_and_depends_on_the_secret_and_the_block():
    raw = bloom_fields.pack(_enc())
    for value in (b"usman", b"qureshi", b"sana", b"2024", b"35202", b"3001234567"):
        assert value not in raw.lower()
    other_secret = bloom_fields.encode(bloom.derive_keys(b"another-national-linkage-secret"), _rec())
    assert set(other_secret.names).isdisjoint(_enc().names) and other_secret.date != _enc().date
    other_block = bloom_fields.encode(KEYS, _rec(born=date(2023, 3, 7)))  # same names, another birth year
    assert all(bloom_fields.dice(a, b) < 0.8 for a, b in zip(other_block.names, _enc().names))
    assert other_block.date != _enc().date


def test_levels_from_encodings_follow_the_engines_levels():
    base = _enc()
    same = bloom_fields.levels(base, _enc(given="Mohammad Usman"))  # a romanisation variant: the same name key
    assert same == {"given_name": 4, "family_name": 5, "guardian_name": 4, "birth_date": 4, "sex": 1}
    assert bloom_fields.levels(_enc(given="Muhammad"), _enc(given="محمد"))["given_name"] == 3  # sounds alike (Urdu)
    assert bloom_fields.levels(base, _enc(given="Muhammad Usmam"))["given_name"] == 2  # one letter
    assert bloom_fields.levels(base, _enc(given="Zainab"))["given_name"] == 0
    assert bloom_fields.levels(base, _enc(given="Baby of Sana"))["given_name"] == -1  # a newborn's placeholder
    assert bloom_fields.levels(base, _enc(family="Sana Qureshi"))["family_name"] == 1  # the guardian's name as family name
    assert bloom_fields.levels(base, _enc(born=date(2024, 7, 3)))["birth_date"] == 3  # day and month swapped
    assert bloom_fields.levels(base, _enc(born=date(2024, 3, 10)))["birth_date"] == 2  # three days apart
    assert bloom_fields.levels(base, _enc(born=date(2024, 9, 20)))["birth_date"] == 1  # same year (the block) only
    assert explain(same)[:2] == ["same birth date", "same given name (or a known spelling of it)"]


def test_every_two_dates_three_days_apart_share_a_week_token():
    d0 = date(2024, 1, 1).toordinal()
    for n in range(360):
        a, b = date.fromordinal(d0 + n), date.fromordinal(d0 + n + 3)
        fa, fb = bloom_fields.date_features(a.isoformat()), bloom_fields.date_features(b.isoformat())
        assert fa[2] == fb[2] or fa[3] == fb[3]


def test_scores_use_the_engines_weights_and_thresholds():
    assert bloom_fields.score(_enc(), _enc(given="Mohammad Usman")).grade == "certain"
    typo = bloom_fields.score(_enc(), _enc(given="Muhammad Usmam", born=date(2024, 7, 3)))
    assert typo.grade in ("probable", "possible") and 0 < typo.probability < 1
    stranger = bloom_fields.score(_enc(), _enc(given="Bilal", family="Butt", guardian="Maryam Butt", born=date(2024, 3, 8)))
    assert stranger.grade is None
    assert bloom_fields.MODEL.thresholds == {"certain": 13.3, "probable": 6.6, "possible": 2.0}


def test_candidate_pairs_are_of_different_custodians_sharing_a_key():
    members = [("a", "PK-SD", _enc()), ("b", "PK-PB", _enc(given="Muhammad Usmam", born=date(2024, 7, 3))),
               ("c", "PK-PB", _enc(given="Bilal", family="Butt", guardian="Maryam Butt", born=date(2024, 10, 20))),
               ("d", "PK-SD", _enc(born=date(2024, 11, 30)))]  # names agree, the date far off
    assert bloom_fields.candidate_pairs(members) == {(0, 1), (1, 3)}
    assert bloom_fields.candidate_pairs([(i, "PK-PB", e) for i, _, e in members]) == set()


def _prepared(recs):
    out = []
    for r in recs:
        p = comparisons.prepare(**{k: r[k] for k in ("given_name", "family_name", "guardian_name", "birth_date", "sex",
                                                      "guardian_cnic", "bform", "phone", "facility", "district", "province")})
        p["unique_id"] = r["unique_id"]
        out.append(p)
    return out


def test_quality_on_a_seeded_population_meets_the_issues_bar():
    """On a seeded bench population (1,500 children and their injected duplicates), blocked by
    birth year and sex as `nhr dedupe cross-province` blocks: F1 >= 0.95 at the review threshold,
    precision >= 0.99 for `certain`, and the candidate keys keep every pair that comparing every
    pair of a block grades, comparing a small part of the pairs."""
    recs = population.generate(1500, seed=11)
    truth = population.truth_pairs(recs)
    prep = _prepared(recs)
    blocks = defaultdict(list)
    for p in prep:
        blocks[bloom_fields.block_of(p)].append((p["unique_id"], p["unique_id"], bloom_fields.encode(KEYS, p)))
    graded, every, compared, total = {}, set(), 0, 0
    for members in blocks.values():
        total += len(members) * (len(members) - 1) // 2
        for i in range(len(members)):
            for j in range(i + 1, len(members)):
                if bloom_fields.score(members[i][2], members[j][2]).grade:
                    every.add(tuple(sorted((members[i][0], members[j][0]))))
        pairs = bloom_fields.candidate_pairs(members)
        compared += len(pairs)
        for i, j in pairs:
            sc = bloom_fields.score(members[i][2], members[j][2])
            if sc.grade:
                graded[tuple(sorted((members[i][0], members[j][0])))] = sc.grade
    assert set(graded) == every and compared < 0.1 * total
    tp = len(set(graded) & truth)
    precision, recall = tp / len(graded), tp / len(truth)
    assert 2 * precision * recall / (precision + recall) >= 0.95
    certain = {p for p, g in graded.items() if g == "certain"}
    assert len(certain) > 50 and len(certain & truth) >= 0.99 * len(certain)
