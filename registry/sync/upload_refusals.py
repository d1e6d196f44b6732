"""The refusal events of an upload judged on the event loop (the batch upload,
registry/sync/batch_async.py, and the FHIR Bundle, registry/fhir/bundle_async.py).

An upload builds its refusal events as it judges (`Refusals`) and writes them in its one write
statement with its data; `refusals_booked` tells the audit trail they are written, also when the
upload fails (the unit of work writes them again after its rollback), but not when a concurrent
writer raced it (`Raced`: the upload is judged again and this attempt's refusals are not its
answer).
"""

from __future__ import annotations

from contextlib import contextmanager


class Raced(Exception):
    """A concurrent writer took one of the ids between the snapshot and the write (or a health ID
    drawn for a registration is held already): judged again."""


class Refusals:
    """The refusal events an upload builds as it judges (`trail.build`), to write with its data:
    `rows`, and `subjects` (event id -> its subject rows, for those that have some). Called as
    `refuse(action, outcome, subjects=..., **event)`."""

    __slots__ = ("trail", "rows", "subjects")

    def __init__(self, trail) -> None:
        self.trail, self.rows, self.subjects = trail, [], {}

    def __call__(self, action: str, outcome: str, *, subjects=(), **event) -> None:
        row = self.trail.build(action, outcome, **event)
        self.rows.append(row)
        if subjects:
            self.subjects[row["id"]] = [{"event_id": row["id"], "patient_id": s} for s in dict.fromkeys(subjects)]


@contextmanager
def refusals_booked(trail, refusals: list[dict], subjects: dict | None = None):
    """The trail's bookkeeping of the refusal events an upload built (`trail.build`) and writes
    with its data (`subjects`: event id -> its subject rows, for those that have some): booked as
    written when the block ends, and also when it fails, since the unit of work writes them again
    after its rollback; not when a concurrent writer raced the upload (`Raced`: it is judged
    again, and this attempt's refusals are not its answer)."""
    try:
        yield
    except Raced:
        raise
    except BaseException:
        for row in refusals:
            trail.written(row, (subjects or {}).get(row["id"]))
        raise
    for row in refusals:
        trail.written(row, (subjects or {}).get(row["id"]))
