"""Duplicates within one uploaded file (issue 13): the same child twice in one import chunk.

The registration check (service.check_registration) compares a new record with the registry;
the rows of one import chunk are written together, so two rows of the same child in it would not
meet there. This compares the chunk's rows with each other, in memory, with the same engine:
the dedupe's blocking rules (blocking.RULES, with the swapped birth date) and the active model's
scorer (scoring.score). Rows are taken in file order; a row whose best match among the rows kept
before it is `certain` or `probable` is flagged (the import reports it as
`confirm_not_duplicate,likely_duplicate_in_file`), unless it confirms `confirm_not_duplicate`.
The other matches of a kept row (`possible` ones, and the likely ones of a row that confirmed)
are returned too, so that both rows, once imported, go to the review queue.

Prepared records (comparisons.prepare) only: nothing is stored, logged or returned but indexes
into the list and scores.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from registry.linkage import blocking
from registry.linkage.scoring import Model, Scored, score

LIKELY = ("certain", "probable")


@dataclass
class InFile:
    """Per flagged row index: the earlier kept row it most likely duplicates; per kept row
    index: its matches among the earlier kept rows, to propose, as (earlier index, scored)."""

    likely: dict[int, tuple[int, Scored]] = field(default_factory=dict)
    propose: dict[int, list[tuple[int, Scored]]] = field(default_factory=dict)


def check(model: Model, records: list[dict], confirmed: list[bool]) -> InFile:
    """Compare each record with the records before it that were kept (not flagged), only within
    shared blocking keys, so a file of n rows costs about n blocks, not n^2 pairs."""
    seen: dict[tuple[str, tuple], list[int]] = defaultdict(list)
    out = InFile()
    for i, rec in enumerate(records):
        keys = blocking.keys_of(rec)
        earlier = sorted({j for k in keys for j in seen.get(k, ())[:blocking.MAX_BLOCK]})
        scored = [(j, score(model, records[j], rec)) for j in earlier]
        scored = [(j, s) for j, s in scored if s.grade is not None]
        scored.sort(key=lambda js: -js[1].weight)
        likely = [(j, s) for j, s in scored if s.grade in LIKELY]
        if likely and not confirmed[i]:
            out.likely[i] = likely[0]
            continue  # a flagged row is not imported: a third copy is compared with the first only
        if scored:
            out.propose[i] = scored
        for k in keys:
            seen[k].append(i)
    return out
