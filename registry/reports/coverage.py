"""Coverage, dropout and zero-dose tables summed from `report_coverage_counts` (no patient row
is read), with small cells suppressed.

A report is for one jurisdiction (any level) and one birth cohort (a year or a month); its rows
are the jurisdiction's children in the tree (provinces of the country, districts of a province,
tehsils of a district, union councils of a tehsil), then its own facilities (children whose home
facility is registered at its level) if any, and its total is the jurisdiction itself. A unit
with no children in the cohort is `empty`: its counts are 0, published, never suppressed.
Suppression is decided over the whole tree for the cohort (suppression.py), so that no
combination of reports reveals a withheld cell.

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
from registry.reports.suppression import OWN, VALUE, Hierarchy, edges, protect, structure
from registry.schedules.engine import add

_COHORT = re.compile(r"^(\d{4})(?:-(\d{2}))?$")
DENOMINATORS = ("registered", "target")
MEASURES = ("any", "valid")


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
class Counts:
    """Per jurisdiction, for one cohort, every column's count: `value` over the jurisdiction's
    whole subtree, `own` for its own facilities (children whose leaf is the jurisdiction itself)."""

    value: dict[str, dict[str, int]] = field(default_factory=dict)  # code -> column -> count
    own: dict[str, dict[str, int]] = field(default_factory=dict)


def _columns(items: tuple[str, ...]) -> list[str]:
    return ["children", "zero_dose_children", "zero_dose"] + [f"{i}:{m}" for i in items for m in MEASURES]


def load_counts(session: Session, tree: Tree, cohort: Cohort, as_of: date) -> Counts:
    """Every jurisdiction's counts for the cohort (the whole tree: suppression is decided over
    all the reports at once, suppression.py)."""
    t = CoverageCount.__table__
    in_cohort = t.c.cohort_month.between(cohort.first, cohort.last)
    leaves: dict[str, dict[str, int]] = {}
    rows = session.execute(select(t.c.leaf, t.c.item, func.sum(t.c.any_count), func.sum(t.c.valid_count))
                           .where(in_cohort, t.c.item != cat.CHILDREN).group_by(t.c.leaf, t.c.item)).all()
    for leaf, item, n_any, n_valid in rows:
        cell = leaves.setdefault(leaf, {})
        cell[f"{item}:any"], cell[f"{item}:valid"] = int(n_any), int(n_valid)
    rows = session.execute(select(t.c.leaf, t.c.cohort_month, func.sum(t.c.any_count), func.sum(t.c.valid_count))
                           .where(in_cohort, t.c.item == cat.CHILDREN).group_by(t.c.leaf, t.c.cohort_month)).all()
    eligible = {m: zero_dose_eligible(m, as_of) for m in {r[1] for r in rows}}
    for leaf, month, children, with_p1 in rows:
        cell = leaves.setdefault(leaf, {})
        cell["children"] = cell.get("children", 0) + int(children)
        if eligible[month]:
            cell["zero_dose_children"] = cell.get("zero_dose_children", 0) + int(children)
            cell["zero_dose"] = cell.get("zero_dose", 0) + int(children) - int(with_p1)
    out = Counts()
    for leaf, cell in leaves.items():
        out.own[leaf] = cell
        code = leaf
        while code is not None and code in tree.nodes:
            total = out.value.setdefault(code, {})
            for name, n in cell.items():
                total[name] = total.get(name, 0) + n
            code = tree.nodes[code].parent_code
    return out


def suppressed_cells(tree: Tree, counts: Counts, threshold: int, columns: list[str]) -> dict[str, set]:
    """Column -> withheld cells ((VALUE | OWN, code)), decided over the whole tree."""
    h = Hierarchy({code: node.parent_code for code, node in tree.nodes.items()}, tree.kids)
    nonempty = {c for c, v in counts.value.items() if v.get("children")}
    own_nonempty = {c for c, v in counts.own.items() if v.get("children", 0)}
    shape = structure(h, nonempty, own_nonempty)
    out = {}
    for name in columns:
        value = {c: v.get(name, 0) for c, v in counts.value.items()}
        own = {c: v.get(name, 0) for c, v in counts.own.items()}
        out[name] = protect(edges(h, value, own, nonempty, own_nonempty, shape), threshold)
    return out


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
    counts = load_counts(session, tree, cohort, as_of)
    columns = _columns(items)
    hidden_cells = suppressed_cells(tree, counts, threshold, columns)
    kids = sorted(tree.kids.get(node.code, []))
    # (row code, its counts, its cell): sub-units, then the jurisdiction's own facilities; a
    # jurisdiction without sub-units has one row, itself
    cells = [(c, counts.value.get(c, {}), (VALUE, c)) for c in kids]
    if not kids:
        cells = [(node.code, counts.value.get(node.code, {}), (VALUE, node.code))]
    elif counts.own.get(node.code, {}).get("children"):
        cells.append((node.code, counts.own[node.code], (OWN, node.code)))
    units = [c for c, _, _ in cells]
    figures = targets(session, sorted(set(units)) + [node.code], cohort.year) if denominator == "target" else {}
    rows = []
    for code, vals, cell in cells:
        hidden = {name for name in columns if cell in hidden_cells[name]}
        rows.append(_row(code, tree, vals, hidden, figures.get(code) if cell[0] == VALUE else None, cohort, denominator, items))
    total_vals = counts.value.get(node.code, {})
    total = _row(node.code, tree, total_vals, {n for n in columns if (VALUE, node.code) in hidden_cells[n]},
                 figures.get(node.code), cohort, denominator, items)
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
    return {"code": code, "name": node.name if node else code, "children": children, "empty": not vals.get("children"),
            "target_population": target, "denominator": round(den, 1) if den is not None else None,
            "items": out_items, "dropout_pct": dropout,
            "zero_dose": {"eligible_children": zd_children, "count": zd,
                          "pct": _pct(zd, zd_children) if zd_children is not None else None},
            "suppressed": sorted(hidden)}
