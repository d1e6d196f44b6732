"""`nhr reports check`: recompute the aggregates with the schedule engine and list differences.

What is compared, per (leaf jurisdiction, birth month, item) and measure (any / valid):
- everything (no sample): the maintained `report_coverage_counts` against the engine's verdicts
  (judge.py) summed over every selected child of the jurisdiction;
- a sample of N children: their `report_child_status` rows, summed the same way, against the
  engine's verdicts for the same children (a missing status row counts as nothing).
Queued changes are folded in first (as of today, like the refresher), so a difference is a
disagreement, not a change in flight. Differences name places, months, items and counts, never a
patient. Reads clear columns only; decrypts nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import Date, String, Uuid, func, select, text
from sqlalchemy.orm import Session

from registry.reports import aggregate, judge
from registry.reports import catalogue as cat
from registry.reports import statements as sql
from registry.reports.coverage import Tree
from registry.reports.models import ChildStatus, CoverageCount


@dataclass(frozen=True)
class Difference:
    leaf: str
    cohort_month: int
    item: str
    measure: str  # any / valid (for `_children`: children / penta1_by_12m)
    stored: int
    engine: int


def _children(session: Session, tree: Tree, jurisdiction: str | None, sample: int | None):
    """(patient_id, birth_date, sex, custodian, leaf) of the selected children in the jurisdiction."""
    node = tree.nodes.get(jurisdiction) if jurisdiction else None
    where, params = "1 = 1", {}
    if node is not None and node.level == "province":
        where, params = "p.province = :j", {"j": node.code}
    elif node is not None and node.level == "district":
        where, params = "p.district = :j", {"j": node.code}
    stmt = (f"SELECT p.id AS patient_id, p.birth_date AS birth_date, p.sex AS sex, p.custodian AS custodian, "
            f"{sql.LEAF} AS leaf FROM patients p JOIN facilities f ON f.code = p.home_facility "
            f"WHERE ({where}) AND {sql.SELECTED_PATIENTS}" + (" ORDER BY random()" if sample else ""))
    if sample and (node is None or node.level in ("country", "province", "district")):
        stmt += f" LIMIT {int(sample)}"
    query = text(stmt).columns(patient_id=Uuid(), birth_date=Date(), sex=String(), custodian=String(), leaf=String())
    rows = session.execute(query, params).all()
    if node is not None and node.level not in ("country", "province", "district"):
        below = tree.below(node.code)
        rows = [r for r in rows if r.leaf in below]
    return rows[:sample] if sample else rows


def _add(totals: dict, leaf: str, month: int, any_mask: int, valid_mask: int, p1: int) -> None:
    cell = totals.setdefault((leaf, month, cat.CHILDREN), [0, 0])
    cell[0] += 1
    cell[1] += p1
    for k, item in enumerate(cat.ITEMS):
        if (any_mask >> k) & 1:
            cell = totals.setdefault((leaf, month, item), [0, 0])
            cell[0] += 1
            cell[1] += (valid_mask >> k) & 1


def differences(session: Session, today: date, *, jurisdiction: str | None = None,
                sample: int | None = None) -> tuple[int, list[Difference]]:
    """(children checked, differences). Folds queued changes in first (as of `today`)."""
    while aggregate.refresh(session, today, 5_000):
        pass
    tree = Tree.load(session)
    children = _children(session, tree, jurisdiction, sample)
    schedules = judge.schedule_of(aggregate.schedule_groups(session, today))
    engine_totals: dict = {}
    ids = [c.patient_id for c in children]
    for i in range(0, len(children), 5000):
        part = children[i:i + 5000]
        doses = judge.doses_of(session, [c.patient_id for c in part])
        for c in part:
            seen = doses[c.patient_id]
            a, v = judge.judge(schedules.get(c.custodian), c.birth_date, c.sex, seen)
            _add(engine_totals, c.leaf, c.birth_date.year * 100 + c.birth_date.month, a, v,
                 judge.penta1_by_12m(c.birth_date, seen))
    stored: dict = {}
    if sample:
        st = ChildStatus.__table__
        for i in range(0, len(ids), 1000):
            for r in session.execute(select(st).where(st.c.patient_id.in_(ids[i:i + 1000]))):
                _add(stored, r.leaf, r.cohort_month, r.any_mask, r.valid_mask, r.penta1_by_12m)
    else:
        ct = CoverageCount.__table__
        q = select(ct.c.leaf, ct.c.cohort_month, ct.c.item, ct.c.any_count, ct.c.valid_count)
        node = tree.nodes.get(jurisdiction) if jurisdiction else None
        if node is not None and node.level == "province":
            q = q.where(ct.c.province == node.code)
        elif node is not None and node.level == "district":
            q = q.where(ct.c.district == node.code)
        below = tree.below(node.code) if node is not None and node.level not in ("country", "province", "district") else None
        for r in session.execute(q):
            if below is None or r.leaf in below:
                stored[(r.leaf, r.cohort_month, r.item)] = [r.any_count, r.valid_count]
    out = []
    for key in sorted(set(stored) | set(engine_totals)):
        s, e = stored.get(key, [0, 0]), engine_totals.get(key, [0, 0])
        for n, measure in enumerate(("any", "valid")):
            if s[n] != e[n]:
                out.append(Difference(key[0], key[1], key[2], measure, s[n], e[n]))
    return len(children), out


def engine_judged(session: Session) -> int:
    """How many status rows the engine (not the SQL) judged."""
    return session.execute(select(func.count()).select_from(ChildStatus).where(ChildStatus.engine == 1)).scalar_one()

