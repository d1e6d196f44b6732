"""Small-cell suppression with complementary suppression (pure functions, no database).

Invariants:
- Primary: every cell counting fewer than `threshold` children (zero included: the issue says
  "fewer than 5", and a zero next to a released total can be as telling as a one) is suppressed.
- Complementary: a column is an additive group (its unit cells sum to its total). After
  suppression, no group has exactly one suppressed cell, so no suppressed cell can be recovered
  by subtraction. The complement chosen is the smallest released unit cell; when no unit cell is
  left to suppress, the total is suppressed.
- The denominator column (children) is suppressed like any count; a rate derived from a
  suppressed count (coverage, dropout) is suppressed too.

Known limit (documented in docs/reports.md): protection is within one table. Differencing two
reports (a province by district vs one district by tehsil; a year vs its months) is limited by
the same primary rule applying to the same cell everywhere, not by a global solver.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Column:
    """One additive group: values per unit (row) and the total; `suppressed` is filled in."""

    units: dict[str, int]
    total: int
    suppressed_units: set[str] | None = None
    total_suppressed: bool = False


def suppress_column(col: Column, threshold: int) -> Column:
    hidden = {u for u, v in col.units.items() if v < threshold}
    total_hidden = col.total < threshold
    if total_hidden:
        hidden = set(col.units)  # every part of a small total is small
    while True:
        count = len(hidden) + (1 if total_hidden else 0)
        if count != 1:
            break
        released = sorted((v, u) for u, v in col.units.items() if u not in hidden)
        if released:
            hidden.add(released[0][1])
        else:
            total_hidden = True
    col.suppressed_units, col.total_suppressed = hidden, total_hidden
    return col


def recoverable(units: dict[str, int], total: int, hidden: set[str], total_hidden: bool) -> bool:
    """True if some hidden cell follows from the released ones (exactly one unknown in the sum)."""
    del units, total
    return len(hidden) + (1 if total_hidden else 0) == 1
