"""Rows of a live aggregate report (refusals, data quality): which unit a record falls in, and
suppression of a table of counts through the one public rule (suppression.suppress_column).

A report is for one jurisdiction node; its rows are the node's children in the tree (provinces
of the country, districts of a province, tehsils of a district, union councils of a tehsil)
and, for a node with no children (a union council), the facilities in it. The total is the node.
A record is placed by its leaf jurisdiction (a facility's node); one that lies in the node but
under none of its children is counted in a row with the node's own code, as coverage does.
"""

from __future__ import annotations

from sqlalchemy import select, true
from sqlalchemy.orm import Session

from registry.facilities.models import Facility
from registry.reports.suppression import Column, suppress_column

TOTAL = "_total"
F = Facility.__table__


class Units:
    """The rows of a report on `node`, and the unit of a record given its place."""

    def __init__(self, session: Session, node, tree) -> None:
        self.node, self.tree = node, tree
        self.by_facility = not tree.kids.get(node.code) and node.level not in ("country", "province")
        self.below = tree.below(node.code)
        if self.by_facility:
            rows = session.execute(select(F.c.code, F.c.name).where(F.c.jurisdiction_code == node.code)).all()
            self.codes = sorted(r.code for r in rows)
            self.names = {r.code: r.name for r in rows}
        else:
            self.codes = sorted(tree.kids.get(node.code, []))
            self.names = {c: tree.nodes[c].name for c in self.codes}
        self.names[node.code] = node.name

    def where(self, province_col, district_col):
        """The SQL filter that narrows records to the node (refined by `unit_of`)."""
        node = self.node
        if node.level == "country":
            return true()
        if node.level == "province":
            return province_col == node.code
        return district_col == node.district

    def unit_of(self, province: str, district: str, leaf: str, facility: str) -> str | None:
        node = self.node
        if node.level == "country":
            return province
        if node.level == "province":
            return district if province == node.code else None
        if leaf not in self.below:
            return None
        if self.by_facility:
            return facility
        unit = self.tree.child_toward(node.code, leaf) or node.code
        if unit not in self.codes:  # the node's own code: records under none of its children
            self.codes.append(unit)
            self.names.setdefault(unit, unit)
        return unit


def suppress(units: list[str], columns: dict[str, dict[str, int]], threshold: int) -> tuple[dict, dict]:
    """(values, hidden) per unit and TOTAL: each column is an additive group (its units sum to
    its total) suppressed by suppression.suppress_column."""
    values: dict[str, dict[str, int]] = {u: {} for u in units + [TOTAL]}
    hidden: dict[str, set[str]] = {u: set() for u in units + [TOTAL]}
    for name, per_unit in columns.items():
        col = suppress_column(Column({u: per_unit.get(u, 0) for u in units}, sum(per_unit.get(u, 0) for u in units)), threshold)
        for u in units:
            values[u][name] = per_unit.get(u, 0)
            if u in col.suppressed_units:
                hidden[u].add(name)
        values[TOTAL][name] = col.total
        if col.total_suppressed:
            hidden[TOTAL].add(name)
    return values, hidden


def pct(num: int | None, den: int | None) -> float | None:
    return round(100.0 * num / den, 1) if num is not None and den else None
