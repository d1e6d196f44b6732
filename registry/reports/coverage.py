"""Coverage, dropout and zero-dose tables summed from `report_coverage_counts` (no patient row
is read), with small cells suppressed.

A report is for one jurisdiction (any level) and one birth cohort (a year or a month); its rows
are the jurisdiction's children in the tree (provinces of the country, districts of a province,
tehsils of a district, union councils of a tehsil) and its total is the jurisdiction itself.

Definitions (DESIGN 5): coverage of X = children of the cohort with X / denominator, where the
denominator is the registered children of the cohort, or the loaded target population of the
jurisdiction and year (a month cohort uses a twelfth of the year's figure). Dropout A->B =
(A - B) / A on any-dose counts. Zero-dose = children without Penta-1 before their first
birthday, counted over the cohort months whose youngest child is 12 months old by `as_of`.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass, field
from datetime import date

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from registry.errors import InvalidInput
from registry.jurisdictions.models import Jurisdiction
from registry.reports import catalogue as cat
from registry.reports.models import CoverageCount, TargetPopulation
from registry.reports.suppression import Column, suppress_column
from registry.schedules.engine import add

_COHORT = re.compile(r"^(\d{4})(?:-(\d{2}))?$")
DENOMINATORS = ("registered", "target")
MEASURES = ("any", "valid")
TOTAL = "_total"


@dataclass(frozen=True)
class Cohort:
    label: str
    year: int
    first: int  # YYYYMM
    last: int
    months: int


def parse_cohort(text: str) -> Cohort:
    m = _COHORT.match(text or "")
    if not m or not 1900 <= int(m.group(1)) <= 2200 or (m.group(2) and not 1 <= int(m.group(2)) <= 12):
        raise InvalidInput("cohort must be a birth year (2025) or a birth month (2025-03)", field="cohort")
    year = int(m.group(1))
    if m.group(2):
        month = year * 100 + int(m.group(2))
        return Cohort(text, year, month, month, 1)
    return Cohort(text, year, year * 100 + 1, year * 100 + 12, 12)


def zero_dose_eligible(month: int, as_of: date) -> bool:
    """Every child born in `month` (YYYYMM) has had a first birthday by `as_of`."""
    y, m = divmod(month, 100)
    return add(date(y, m, calendar.monthrange(y, m)[1]), cat.ZERO_DOSE_AGE) <= as_of


@dataclass
class Tree:
    """The jurisdiction tree as plain rows (code, name, level, parent_code, province, district)."""

    nodes: dict[str, object]
    kids: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def load(cls, session: Session) -> Tree:
        rows = session.execute(select(Jurisdiction.__table__)).all()
        kids: dict[str, list[str]] = {}
        for r in rows:
            kids.setdefault(r.parent_code, []).append(r.code)
        return cls({r.code: r for r in rows}, kids)

    def child_toward(self, ancestor: str, code: str) -> str | None:
        """The child of `ancestor` on the path to `code` (None if `code` is not below it)."""
        node = self.nodes.get(code)
        while node is not None and node.parent_code is not None:
            if node.parent_code == ancestor:
                return node.code
            node = self.nodes.get(node.parent_code)
        return None

    def below(self, code: str) -> set[str]:
        out, frontier = {code}, [code]
        while frontier:
            kids = self.kids.get(frontier.pop(), [])
            out.update(kids)
            frontier.extend(kids)
        return out


@dataclass
class Table:
    """Counts per unit and for the total, before and after suppression."""

    units: list[str]
    children: dict[str, int] = field(default_factory=dict)
    counts: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (unit, item, measure)
    zd_children: dict[str, int] = field(default_factory=dict)
    zd_with_penta1: dict[str, int] = field(default_factory=dict)


def _unit_query(node, tree: Tree):
    t = CoverageCount.__table__
    if node.level == "country":
        return t.c.province, None, lambda key: key
    if node.level == "province":
        return t.c.district, t.c.province == node.code, lambda key: key
    if node.level == "district":
        return t.c.leaf, t.c.district == node.code, lambda key: tree.child_toward(node.code, key) or node.code
    leaves = sorted(tree.below(node.code))
    return t.c.leaf, t.c.leaf.in_(leaves), lambda key: tree.child_toward(node.code, key) or node.code


def load_table(session: Session, node, tree: Tree, cohort: Cohort, as_of: date) -> Table:
    t = CoverageCount.__table__
    unit_col, where, to_unit = _unit_query(node, tree)
    base = [t.c.cohort_month.between(cohort.first, cohort.last)] + ([where] if where is not None else [])
    kids = sorted(tree.kids.get(node.code, []))
    table = Table(units=kids if node.level != "union_council" else [node.code])
    rows = session.execute(select(unit_col, t.c.item, func.sum(t.c.any_count), func.sum(t.c.valid_count))
                           .where(*base, t.c.item != cat.CHILDREN).group_by(unit_col, t.c.item)).all()
    for key, item, n_any, n_valid in rows:
        unit = to_unit(key)
        for measure, n in (("any", n_any), ("valid", n_valid)):
            table.counts[(unit, item, measure)] = table.counts.get((unit, item, measure), 0) + int(n)
    rows = session.execute(select(unit_col, t.c.cohort_month, func.sum(t.c.any_count), func.sum(t.c.valid_count))
                           .where(*base, t.c.item == cat.CHILDREN).group_by(unit_col, t.c.cohort_month)).all()
    for key, month, children, with_p1 in rows:
        unit = to_unit(key)
        table.children[unit] = table.children.get(unit, 0) + int(children)
        if zero_dose_eligible(month, as_of):
            table.zd_children[unit] = table.zd_children.get(unit, 0) + int(children)
            table.zd_with_penta1[unit] = table.zd_with_penta1.get(unit, 0) + int(with_p1)
    for unit in {u for (u, _, _) in table.counts} | set(table.children):
        if unit not in table.units:
            table.units.append(unit)  # e.g. facilities registered at district level in a district report
    return table


def targets(session: Session, codes: list[str], year: int) -> dict[str, int]:
    t = TargetPopulation.__table__
    rows = session.execute(select(t.c.jurisdiction_code, t.c.population).where(t.c.year == year, t.c.jurisdiction_code.in_(codes)))
    return {code: pop for code, pop in rows}


def _pct(num: int | None, den: float | None) -> float | None:
    if num is None or not den:
        return None
    return round(100.0 * num / den, 1)


def build(session: Session, node, tree: Tree, cohort: Cohort, as_of: date, denominator: str,
          threshold: int, items: tuple[str, ...] = cat.ITEMS) -> dict:
    if denominator not in DENOMINATORS:
        raise InvalidInput(f"denominator must be one of: {', '.join(DENOMINATORS)}", field="denominator")
    table = load_table(session, node, tree, cohort, as_of)
    units = table.units
    hidden: dict[str, set[str]] = {u: set() for u in units + [TOTAL]}
    values: dict[str, dict[str, int]] = {u: {} for u in units + [TOTAL]}

    def column(name: str, per_unit: dict[str, int]) -> None:
        col = suppress_column(Column({u: per_unit.get(u, 0) for u in units}, sum(per_unit.get(u, 0) for u in units)), threshold)
        for u in units:
            values[u][name] = per_unit.get(u, 0)
            if u in col.suppressed_units:
                hidden[u].add(name)
        values[TOTAL][name] = col.total
        if col.total_suppressed:
            hidden[TOTAL].add(name)

    column("children", table.children)
    column("zero_dose_children", table.zd_children)
    column("zero_dose", {u: table.zd_children.get(u, 0) - table.zd_with_penta1.get(u, 0) for u in units})
    for item in items:
        for measure in MEASURES:
            column(f"{item}:{measure}", {u: table.counts.get((u, item, measure), 0) for u in units})
    figures = targets(session, units + [node.code], cohort.year) if denominator == "target" else {}
    rows = [_row(u, tree, values[u], hidden[u], figures.get(u), cohort, denominator, items) for u in units]
    total = _row(node.code, tree, values[TOTAL], hidden[TOTAL], figures.get(node.code), cohort, denominator, items)
    return {"jurisdiction": {"code": node.code, "name": node.name, "level": node.level}, "cohort": cohort.label,
            "denominator": denominator, "as_of": as_of.isoformat(), "suppression_threshold": threshold,
            "items": list(items), "rows": rows, "total": total}


def _row(code: str, tree: Tree, vals: dict[str, int], hidden: set[str], target: int | None, cohort: Cohort,
         denominator: str, items: tuple[str, ...]) -> dict:
    def shown(name: str) -> int | None:
        return None if name in hidden else vals.get(name, 0)

    children = shown("children")
    target_den = target * cohort.months / 12 if target is not None else None
    den = children if denominator == "registered" else target_den
    out_items = {}
    for item in items:
        a, v = shown(f"{item}:any"), shown(f"{item}:valid")
        out_items[item] = {"any": a, "valid": v, "any_pct": _pct(a, den), "valid_pct": _pct(v, den)}
    dropout = {}
    for first, last in cat.DROPOUTS:
        a, b = shown(f"{first}:any"), shown(f"{last}:any")
        dropout[f"{first}>{last}"] = round(100.0 * (a - b) / a, 1) if a and b is not None else None
    zd_children, zd = shown("zero_dose_children"), shown("zero_dose")
    node = tree.nodes.get(code)
    return {"code": code, "name": node.name if node else code, "children": children,
            "target_population": target, "denominator": round(den, 1) if den is not None else None,
            "items": out_items, "dropout_pct": dropout,
            "zero_dose": {"eligible_children": zd_children, "count": zd,
                          "pct": _pct(zd, zd_children) if zd_children is not None else None},
            "suppressed": sorted(hidden)}
