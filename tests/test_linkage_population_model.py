"""The model fitted to the population scored (issue 13): the prior for the number of records
(priors.py), per cross-province block (bloom_fields.model_for_block), and the term-frequency
adjustment of exact name agreement (term_frequency.py); the stewards' reasons for every grade."""

import pickle
from datetime import date

from registry.demo import linkage_population as population
from registry.linkage import (
    blocking,
    bloom_fields,
    comparisons,
    estimation,
    explain,
    population_model,
    priors,
    scoring,
    term_frequency,
)

CONFIGURED = scoring.Model.from_parameters("configured-2", scoring.default_parameters(), scoring.DEFAULT_THRESHOLDS)


def _prep(**kw):
    base = dict(given_name="Ali", family_name="Khan", guardian_name="Sana Khan", birth_date=date(2025, 3, 7), sex="male",
                guardian_cnic=None, bform=None, phone=None, facility="F-LAH-01", district="PK-PB-LAH", province="PK-PB")
    base.update(kw)
    return comparisons.prepare(**base)


def _crowd(common: str, rare: str) -> list[dict]:
    """A province where `common` is the given name of 30 children and `rare` of 2, among 100 others
    (20 names, 5 children each)."""
    others = ["Bilal", "Usman", "Hamza", "Umar", "Zain", "Saad", "Hassan", "Ahmad", "Imran", "Kamran", "Faisal", "Junaid",
              "Tariq", "Waqas", "Yasir", "Nadeem", "Shahid", "Asif", "Rizwan", "Adnan"]
    recs = [_prep(given_name=common, birth_date=date(2024, 1, 1 + k % 28)) for k in range(30)]
    recs += [_prep(given_name=rare, birth_date=date(2023, 5, 1 + k)) for k in range(2)]
    recs += [_prep(given_name=others[k % len(others)], birth_date=date(2022, 2, 1 + k % 28)) for k in range(100)]
    return recs


def test_a_common_name_agreement_weighs_less_than_a_rare_one():
    recs = _crowd("Muhammad", "Zarghun")
    model = population_model.for_records(CONFIGURED, recs)
    common = scoring.score(model, _prep(given_name="Muhammad"), _prep(given_name="Mohammad"))  # same key: exact level
    rare = scoring.score(model, _prep(given_name="Zarghun"), _prep(given_name="Zarghun"))
    plain = scoring.score(CONFIGURED, _prep(given_name="Zarghun"), _prep(given_name="Zarghun"))
    assert common.levels["given_name"] == rare.levels["given_name"] == 4  # the same comparison level...
    assert common.weight < plain.weight < rare.weight                     # ...weighs by the name's frequency
    assert common.levels["given_name_frequency"] == -1 and rare.levels["given_name_frequency"] == 1
    assert "the given name is common here, so the agreement weighs less" in explain.explain(common.levels)
    assert "the given name is rare here, so the agreement weighs more" in explain.explain(rare.levels)
    # bounded: a name seen twice is not proof
    assert rare.weight - plain.weight <= term_frequency.MAX_BITS * len(term_frequency.ADJUSTED) + 1e-9
    # names that disagree are not adjusted
    other = scoring.score(model, _prep(given_name="Muhammad"), _prep(given_name="Bilal"))
    assert other.weight == scoring.score(CONFIGURED, _prep(given_name="Muhammad"), _prep(given_name="Bilal")).weight


def test_the_adjustment_averages_to_nothing_over_chance_agreements():
    """Weighted by how often two records agree on each value by chance (f^2), the adjustment's
    Bayes factor averages to 1 (sum of f^2 * (sum f^2 / f) / sum f^2 = sum f = 1): the model's u
    keeps its meaning, only how exact agreement is shared between common and rare names changes."""
    recs = _crowd("Muhammad", "Zarghun")
    table = term_frequency.build(recs)
    keys = [r["given_key"] for r in recs]
    freq = {k: keys.count(k) / len(keys) for k in set(keys)}
    mean = sum(f * f * 2 ** table.adjustment("given_name", k) for k, f in freq.items()) / sum(f * f for f in freq.values())
    assert abs(mean - 1) < 0.02


def test_the_frequency_table_holds_counts_of_salted_hashes_not_names():
    recs = _crowd("Muhammad", "Zarghun")
    a, b = term_frequency.build(recs), term_frequency.build(recs)
    blob = pickle.dumps(a)
    for name in ("muhammad", "zarghun", "khan", "sana", "ali", "bilal"):
        assert name.encode() not in blob.lower()
    assert all(isinstance(k, int) and isinstance(v, int) for c in a.counts.values() for k, v in c.items())
    assert a.salt != b.salt and set(a.counts["given_key"]) != set(b.counts["given_key"])  # salted per table
    assert sorted(a.counts["given_key"].values()) == sorted(b.counts["given_key"].values())


def test_the_prior_falls_with_the_population_and_the_model_version_is_kept():
    ref = priors.CONFIGURED_PRIOR_RECORDS
    assert priors.for_population(CONFIGURED, 500) is CONFIGURED            # a small province keeps the tuned grades
    assert priors.for_population(CONFIGURED, ref) is CONFIGURED
    big = priors.for_population(CONFIGURED, 10 * ref)
    assert abs(big.prior * (10 * ref - 1) / (ref - 1) - CONFIGURED.prior) < 1e-15
    assert 3.3 < CONFIGURED.prior_weight - big.prior_weight < 3.35     # log2(10): the same evidence weighs less
    assert (big.version, big.weights, big.thresholds) == (CONFIGURED.version, CONFIGURED.weights, CONFIGURED.thresholds)
    pair = (_prep(), _prep(given_name="Aly"))
    assert scoring.score(big, *pair).weight < scoring.score(CONFIGURED, *pair).weight
    # an EM model's prior holds for the records it was estimated on
    em = scoring.Model.from_parameters("em-PK-PB-x", {**scoring.default_parameters(), "prior_records": 40_000},
                                       scoring.DEFAULT_THRESHOLDS)
    assert priors.prior_records(em) == 40_000
    assert priors.for_population(em, 80_000).prior < em.prior


def test_estimated_parameters_name_the_population_of_their_prior():
    recs = population.generate(300, seed=5, province="PK-PB")
    prep = [_prepared(r) for r in recs]
    params = estimation.estimate(prep, max_pairs=2e4)
    scoring.check_complete(params)
    assert params["prior_records"] == len(prep)
    model = scoring.Model.from_parameters("em-test", params, scoring.DEFAULT_THRESHOLDS)
    assert priors.for_population(model, len(prep)) is model


def test_a_cross_province_block_gets_its_own_prior():
    assert bloom_fields.model_for_block(bloom_fields.PRIOR_BLOCK_RECORDS) is bloom_fields.MODEL
    small, large = bloom_fields.model_for_block(200), bloom_fields.model_for_block(8 * bloom_fields.PRIOR_BLOCK_RECORDS)
    assert small is bloom_fields.MODEL
    assert 2.9 < bloom_fields.MODEL.prior_weight - large.prior_weight < 3.1 and large.version == "fbf-1"


def _prepared(r):
    p = comparisons.prepare(**{k: r[k] for k in ("given_name", "family_name", "guardian_name", "birth_date", "sex",
                                                  "guardian_cnic", "bform", "phone", "facility", "district", "province")})
    p["unique_id"] = r["unique_id"]
    return p


def test_one_province_meets_the_bar_and_every_grade_is_explained():
    """A seeded population all in one province, scored as `nhr dedupe run` scores it (the fitted
    model): review F1 >= 0.95, certain precision >= 0.99; every level of every graded pair has
    its plain-language reason, so stewards can read why each pair is graded."""
    recs = population.generate(4000, seed=17, province="PK-PB")
    truth = population.truth_pairs(recs)
    prep = [_prepared(r) for r in recs]
    model = population_model.for_records(CONFIGURED, prep)
    idx = blocking.index(prep)
    graded, shown = {}, set()
    for unit in blocking.units():
        for i, j in blocking.pairs(prep, idx, unit):
            s = scoring.score(model, prep[i], prep[j])
            if s.grade:
                graded[tuple(sorted((prep[i]["unique_id"], prep[j]["unique_id"])))] = s.grade
                reasons = explain.explain(s.levels)
                assert len(reasons) == len(s.levels), s.levels  # one sentence for every level
                shown |= {k for k in s.levels if k.endswith("_frequency")}
    tp = len(set(graded) & truth)
    precision, recall = tp / len(graded), tp / len(truth)
    assert 2 * precision * recall / (precision + recall) >= 0.95
    certain = {p for p, g in graded.items() if g == "certain"}
    assert len(certain & truth) >= 0.99 * len(certain)
