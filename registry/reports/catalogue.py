"""The antigen-doses that coverage reports count, and the rule that makes a dose *valid*.

Invariants:
- `ITEMS` fixes the bit of each antigen-dose in `report_child_status` masks: append, never
  reorder (a new item needs a rebuild; a reordered one silently corrupts counts).
- A child has item X *validly* when the schedule engine (registry/schedules/engine.py) fills
  X's slot with a valid dose, whatever dose number was recorded; it has X *at any age* when it
  has a `completed` record of X or validly has X. statements.py computes this in SQL where it
  provably equals the engine's verdict, judge.py with the engine itself everywhere else.
- `Rule` / `rules` summarise a schedule's slots per item (ages and the previous item); the
  aggregates judge by the schedule's series themselves (`statements.Group.schedule`).
"""

from __future__ import annotations

from dataclasses import dataclass

from registry.schedules import engine

ITEMS: tuple[str, ...] = (
    "BCG-1", "HEPB-1", "OPV-0", "OPV-1", "OPV-2", "OPV-3", "PENTA-1", "PENTA-2", "PENTA-3",
    "PCV-1", "PCV-2", "PCV-3", "ROTA-1", "ROTA-2", "IPV-1", "IPV-2", "MR-1", "MR-2", "TCV-1",
)
CHILDREN = "_children"  # pseudo-item: children (any_count) and children with Penta-1 by 12 months (valid_count)
ZERO_DOSE_ITEM = "PENTA-1"
ZERO_DOSE_AGE = "12m"
DROPOUTS = (("PENTA-1", "PENTA-3"), ("PENTA-1", "MR-1"))


def split(item: str) -> tuple[str, int]:
    vaccine, _, dose = item.rpartition("-")
    return vaccine, int(dose)


@dataclass(frozen=True)
class Rule:
    """Validity of item `index`: age window and, for later doses, the previous item and interval."""

    index: int
    min_age: str
    max_age: str | None
    previous: int | None
    min_interval: str | None


def rules(schedule: engine.Schedule | None) -> dict[int, Rule]:
    """Item index -> its rule under `schedule`; items the schedule lacks are never valid."""
    if schedule is None:
        return {}
    position = {item: i for i, item in enumerate(ITEMS)}
    out: dict[int, Rule] = {}
    for series in schedule.series:
        previous = None
        for slot in series.slots:
            index = position.get(f"{slot.vaccine}-{slot.dose}")
            if index is not None:
                out[index] = Rule(index, slot.min_age, slot.max_age, previous, slot.min_interval if previous is not None else None)
            previous = index
    return out
