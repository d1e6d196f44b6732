"""The prior of a Fellegi-Sunter model (lambda, "the probability that two random records match")
for the population it is applied to.

lambda = expected matching pairs / pairs compared. A register holds about the same share of
duplicates whatever its size, so among n records the matching pairs grow as n and the pairs as
n^2 / 2: lambda falls as 1 / (n - 1). A model's prior holds for the population it was set on
(`prior_records` in its parameters: the records EM was run on, or, for the configured model,
the population its prior and thresholds were tuned on); scored over n records, or over a
cross-province block of n encodings, the prior is

    lambda(n) = lambda * (prior_records - 1) / (n - 1)      (never above lambda)

so the same evidence weighs less when more unrelated children could have produced it. Without
it the false pairs of a fixed threshold grow as n^2 while the true ones grow as n: the review
queue's precision was 0.97 at 170k children of one province and 0.84 at 1.15M (bench/RESULTS.md,
2026-12-03). The prior is never raised above the model's: a small province keeps the tuned grades.

Counts only: no record is read here.
"""

from __future__ import annotations

import dataclasses

from registry.linkage.scoring import Model

# Records the configured model's prior (1e-4) and thresholds were tuned on (bench/RESULTS.md,
# 2026-12-03 07:45: the review threshold chosen at 115k records).
CONFIGURED_PRIOR_RECORDS = 100_000


def prior_records(model: Model) -> int:
    """The population size the model's prior holds for."""
    return int(model.parameters.get("prior_records") or CONFIGURED_PRIOR_RECORDS)


def scaled(prior: float, reference: int, n: int) -> float:
    """lambda for `n` records, from `prior` at `reference` records (never raised)."""
    if n <= reference or reference < 2:
        return prior
    return prior * (reference - 1) / (n - 1)


def for_population(model: Model, n: int, reference: int | None = None) -> Model:
    """The model with its prior set for `n` records (same m, u, thresholds and version);
    `reference`: the records its prior holds for, if not the model's own `prior_records`."""
    p = scaled(model.prior, reference or prior_records(model), n)
    return model if p == model.prior else dataclasses.replace(model, prior=p)
