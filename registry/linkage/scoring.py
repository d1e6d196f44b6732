"""Fellegi-Sunter scoring with stored parameters: the per-record scorer.

    match weight = log2(prior / (1 - prior)) + sum over fields of log2(m[level] / u[level])
    match probability = 2^w / (1 + 2^w)

exactly as Splink computes `match_weight` and `match_probability` (the null level, -1, adds
nothing: no evidence). The parameters (m and u of every level of every comparison, the prior)
come from a stored model (registry/linkage/match_models.LinkModel): estimated by Splink's EM on
the custodian's records (registry/linkage/estimation.py) or the configured defaults below.

Why not Splink for the single-record check at registration: a DuckDB session per request costs
tens of milliseconds before the first comparison, against a few microseconds a pair here; the
test `test_scorer_gives_splinks_match_weights` pins that both give the same weights.

Grades (FHIR match-grade): `certain` at or above the auto threshold, `probable`, `possible`
(the review queue), below that nothing is proposed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from registry.linkage import comparisons, term_frequency

# Configured starting parameters: {field: {level: (m, u)}}. m = P(level | same child),
# u = P(level | different children). The u of an exact name agreement reflects how common the
# few hundred Pakistani given names are; EM re-estimates all of them from the registry's data.
DEFAULT_LEVELS: dict[str, dict[int, tuple[float, float]]] = {
    "given_name": {4: (0.78, 0.02), 3: (0.10, 0.008), 2: (0.06, 0.004), 1: (0.03, 0.01), 0: (0.03, 0.958)},
    "family_name": {5: (0.70, 0.03), 4: (0.06, 0.01), 3: (0.04, 0.004), 2: (0.02, 0.01), 1: (0.12, 0.0005), 0: (0.06, 0.9455)},
    "birth_date": {4: (0.80, 0.0012), 3: (0.07, 0.0004), 2: (0.07, 0.008), 1: (0.04, 0.33), 0: (0.02, 0.6604)},
    "sex": {1: (0.985, 0.5), 0: (0.015, 0.5)},
    "guardian_name": {4: (0.80, 0.002), 3: (0.08, 0.001), 2: (0.07, 0.003), 1: (0.03, 0.02), 0: (0.02, 0.974)},
    "guardian_cnic": {2: (0.90, 0.0001), 1: (0.06, 0.0002), 0: (0.04, 0.9997)},
    "bform": {1: (0.95, 0.0001), 0: (0.05, 0.9999)},
    "phone": {2: (0.80, 0.0002), 1: (0.05, 0.0004), 0: (0.15, 0.9994)},
    "place": {3: (0.55, 0.02), 2: (0.25, 0.08), 1: (0.15, 0.5), 0: (0.05, 0.4)},
}
DEFAULT_PRIOR = 1e-4
# Match weights (log2 odds, prior included). certain = p >= 0.9999; probable p >= 0.99;
# possible p >= 0.8 (weight 2; it was 0, p >= 0.5, until 2026-12-03: at 115k and 460k records of
# the bench population, weight 2 leaves out 56% and 58% of the different children shown for
# review for 5 and 20 more missed duplicates, 0.03% of them; bench/RESULTS.md). Tuned on the
# bench population (bench/matching.py).
DEFAULT_THRESHOLDS = {"certain": 13.3, "probable": 6.6, "possible": 2.0}


@dataclass
class Model:
    version: str
    prior: float
    weights: dict[str, dict[int, float]]       # field -> level -> log2(m/u)
    thresholds: dict[str, float]
    parameters: dict = field(default_factory=dict)
    # A term-frequency table of the scored population (term_frequency.Table), attached per run by
    # population_model.for_records; None: exact name agreement weighs log2(m/u) whatever the name.
    term_frequencies: object | None = None

    @classmethod
    def from_parameters(cls, version: str, parameters: dict, thresholds: dict) -> Model:
        weights = {}
        for name, lv in parameters["fields"].items():
            weights[name] = {int(k): math.log2(v["m"] / v["u"]) for k, v in lv.items()}
        return cls(version, parameters["prior"], weights, dict(thresholds), parameters)

    @property
    def prior_weight(self) -> float:
        return math.log2(self.prior / (1 - self.prior))

    def weight(self, levels: dict[str, int]) -> float:
        w = self.prior_weight
        for name, level in levels.items():
            if level != -1:
                w += self.weights[name][level]
        return w

    def grade(self, weight: float) -> str | None:
        for g in ("certain", "probable", "possible"):
            if weight >= self.thresholds[g]:
                return g
        return None

    def vector_weight(self) -> Callable[[tuple[int, ...]], float]:
        """`weight` of a level vector (comparisons.level_vector, FIELDS order), for the batch
        dedupe: a table lookup a field instead of a dict walk. The same sum in the same order,
        so the same float: the prior weight, then each field's log2(m/u) in FIELDS order (the
        null level, -1, adds 0.0, which leaves a float unchanged, as skipping it does)."""
        tables = []
        for name in comparisons.FIELDS:
            w = self.weights[name]
            top = max(w, default=0)
            tables.append(tuple([*(w[k] for k in range(top + 1)), 0.0]))  # index -1: the null level
        t0, t1, t2, t3, t4, t5, t6, t7, t8 = tables
        pw = self.prior_weight

        def weight(v: tuple[int, ...]) -> float:
            return pw + t0[v[0]] + t1[v[1]] + t2[v[2]] + t3[v[3]] + t4[v[4]] + t5[v[5]] + t6[v[6]] + t7[v[7]] + t8[v[8]]

        return weight


def default_parameters() -> dict:
    return {"prior": DEFAULT_PRIOR,
            "fields": {f: {str(k): {"m": m, "u": u} for k, (m, u) in lv.items()} for f, lv in DEFAULT_LEVELS.items()}}


def probability(weight: float) -> float:
    if weight > 60:
        return 1.0
    odds = 2.0 ** weight
    return odds / (1.0 + odds)


@dataclass(frozen=True)
class Scored:
    levels: dict[str, int]
    weight: float
    probability: float
    grade: str | None


def score(model: Model, a: dict, b: dict) -> Scored:
    """Levels, weight, probability and grade of two prepared records (comparisons.prepare)."""
    lv = comparisons.levels(a, b)
    w = model.weight(lv)
    if model.term_frequencies is not None:
        return _tf_adjusted(model, a, lv, w)
    return Scored(lv, w, probability(w), model.grade(w))


def _tf_adjusted(model: Model, a: dict, lv: dict[str, int], w: float) -> Scored:
    """`score` with the term-frequency adjustment of exact name agreement (term_frequency.py):
    the weight moves by the adjustment, the levels gain the frequency buckets stewards are shown."""
    bits, shown = term_frequency.adjust(model.term_frequencies, a, lv)
    if shown:
        lv = {**lv, **shown}
    w += bits
    return Scored(lv, w, probability(w), model.grade(w))


def scored_from_vector(model: Model, vector: tuple[int, ...], weight: float, a: dict | None = None) -> Scored:
    """The Scored that `score` gives for the pair whose level vector and weight these are; `a`
    (either record) for a model with term frequencies, whose adjustment depends on the names."""
    lv = dict(zip(comparisons.FIELDS, vector))
    if model.term_frequencies is not None and a is not None:
        return _tf_adjusted(model, a, lv, weight)
    return Scored(lv, weight, probability(weight), model.grade(weight))


def term_frequency_headroom(model: Model) -> float:
    """The most bits the term-frequency adjustment can add to a pair's weight (0 without a table):
    a pair weighing less than the lowest threshold minus this cannot be graded."""
    if model.term_frequencies is None:
        return 0.0
    from registry.linkage import term_frequency

    return term_frequency.MAX_BITS * len(term_frequency.ADJUSTED)


def check_complete(parameters: dict) -> None:
    """Every level of every comparison has m and u in (0, 1]; raises ValueError naming the field."""
    for comp in comparisons.COMPARISONS:
        lv = parameters["fields"].get(comp.field, {})
        for value in comp.values():
            if value == -1:
                continue
            p = lv.get(str(value))
            if not p or not (0 < p["m"] <= 1 and 0 < p["u"] <= 1):
                raise ValueError(f"parameters.{comp.field}.{value}: {p}")
