"""The stored model fitted to the population a run scores: its prior scaled to the number of
records (priors.py) and a term-frequency table of their names (term_frequency.py), both computed
in memory from the run's prepared records, neither stored. `nhr dedupe run` and the matching
bench call `for_records`; the registration check scores with the stored model as it is."""

from __future__ import annotations

import dataclasses

from registry.linkage import priors, term_frequency
from registry.linkage.scoring import Model


def for_records(model: Model, records: list[dict], *, term_frequencies: bool = True) -> Model:
    out = priors.for_population(model, len(records))
    if term_frequencies:
        out = dataclasses.replace(out, term_frequencies=term_frequency.build(records))
    return out
