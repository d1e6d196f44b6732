"""Building the maintained aggregates with set-based SQL: a full rebuild, or the rows of a few
patients (the refresher). Both use the same statements, so incremental equals rebuilt.

Invariants:
- Reads only columns in clear; decrypts nothing (no cipher is even reachable from here).
- Validity follows the schedule in force today for the patient's custodian province
  (`catalogue.rules`); patients of a province without a schedule count as any-dose only.
- Dirty-queue rows are deleted *before* the statuses are computed: a change that commits later
  leaves its queue row behind and is folded in by the next refresh, never lost.
"""

from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy import Uuid, bindparam, delete, func, insert, select, text, update
from sqlalchemy.orm import Session

from registry.immunizations.vaccines import VACCINES
from registry.jurisdictions import repository as jurisdictions
from registry.reports import catalogue as cat
from registry.reports.models import ChildStatus, CoverageCount, DirtyPatient
from registry.schedules import engine
from registry.schedules import service as schedules

_UNITS = {"d": "days", "w": "weeks", "m": "months", "y": "years"}
_LOCK_KEY = 4_040_404  # PostgreSQL advisory lock: one refresher at a time


def _add(pg: bool, col: str, duration: str) -> str:
    n, unit = engine.parse_duration(duration)
    if pg:
        if unit in "dw":
            return f"({col} + {n * (7 if unit == 'w' else 1)})"
        return f"CAST({col} + INTERVAL '{n} {_UNITS[unit]}' AS DATE)"
    if unit in "dw":
        return f"date({col}, '+{n * (7 if unit == 'w' else 1)} days')"
    return f"date({col}, '+{n} {_UNITS[unit]}')"


def _age(duration: str) -> str:
    """The column holding birth date + `duration` (computed once per child, see `_ages`)."""
    n, unit = engine.parse_duration(duration)
    return f"t_{n}{unit}"


def _ages(pg: bool, rules: dict[int, cat.Rule]) -> str:
    durations = {cat.ZERO_DOSE_AGE} | {r.min_age for r in rules.values()} | {r.max_age for r in rules.values() if r.max_age}
    return ", ".join(f"{_add(pg, 'p.birth_date', d)} AS {_age(d)}" for d in sorted(durations))


def _valid_conditions(pg: bool, rules: dict[int, cat.Rule]) -> dict[int, str]:
    conds: dict[int, str] = {}
    for i in range(len(cat.ITEMS)):
        rule = rules.get(i)
        if rule is None:
            continue
        parts = [f"d{i} >= {_age(rule.min_age)}"]
        if rule.max_age is not None:
            parts.append(f"d{i} <= {_age(rule.max_age)}")
        if rule.previous is not None:
            if rule.previous not in conds:
                continue  # the previous dose can never be valid, so neither can this one
            parts.append(conds[rule.previous])
            if rule.min_interval is not None:
                parts.append(f"d{i} >= {_add(pg, f'd{rule.previous}', rule.min_interval)}")
        conds[i] = "(" + " AND ".join(parts) + ")"
    return conds


def dose_pivot(dose_where: str = "1 = 1") -> str:
    """Per patient, the earliest date of each antigen-dose (columns d0..dN) among counted doses."""
    pivots = ",\n".join(
        f"MIN(CASE WHEN i.vaccine = '{v}' AND i.dose_number = {n} THEN i.date_given END) AS d{k}"
        for k, (v, n) in enumerate(cat.split(x) for x in cat.ITEMS))
    return f"SELECT i.patient_id, {pivots} FROM immunizations i WHERE i.status = 'completed' AND {dose_where} GROUP BY i.patient_id"


def status_insert(pg: bool, rules: dict[int, cat.Rule], where: str, doses: str) -> str:
    """INSERT ... SELECT of `report_child_status` rows for the patients matching `where`;
    `doses` is `dose_pivot(...)` as a subquery, or a table holding it. On PostgreSQL, `OFFSET 0`
    keeps the inner query from being flattened, which would copy each age threshold into every
    test that reads it."""
    cohort = ("CAST(EXTRACT(YEAR FROM p.birth_date) * 100 + EXTRACT(MONTH FROM p.birth_date) AS INTEGER)" if pg
              else "CAST(strftime('%Y%m', p.birth_date) AS INTEGER)")
    any_mask = " + ".join(f"(CASE WHEN d{k} IS NOT NULL THEN {1 << k} ELSE 0 END)" for k in range(len(cat.ITEMS)))
    valid = _valid_conditions(pg, rules)
    valid_mask = " + ".join([f"(CASE WHEN {c} THEN {1 << k} ELSE 0 END)" for k, c in valid.items()] or ["0"])
    p1 = cat.ITEMS.index(cat.ZERO_DOSE_ITEM)
    by_12m = f"(CASE WHEN d{p1} < {_age(cat.ZERO_DOSE_AGE)} THEN 1 ELSE 0 END)"
    dates = ", ".join(f"d.d{k} AS d{k}" for k in range(len(cat.ITEMS)))
    return f"""
INSERT INTO report_child_status (patient_id, province, district, leaf, cohort_month, any_mask, valid_mask, penta1_by_12m)
SELECT patient_id, province, district, leaf, cohort_month, {any_mask}, {valid_mask}, {by_12m}
FROM (
  SELECT p.id AS patient_id, p.province AS province, p.district AS district,
    CASE WHEN f.district = p.district THEN f.jurisdiction_code ELSE p.district END AS leaf,
    {cohort} AS cohort_month, {_ages(pg, rules)}, {dates}
  FROM patients p JOIN facilities f ON f.code = p.home_facility
  LEFT JOIN {doses} d ON d.patient_id = p.id
  WHERE {where}{" OFFSET 0" if pg else ""}
) s"""


def counts_insert(where: str) -> str:
    """INSERT ... SELECT of `report_coverage_counts` from the status rows matching `where`.
    Children with the same place, month and masks are counted together first (few distinct
    patterns), so the per-item sums run over patterns, not over children."""
    sums = ",\n".join(f"SUM(((any_mask >> {k}) & 1) * c) AS a{k}, SUM(((valid_mask >> {k}) & 1) * c) AS v{k}"
                      for k in range(len(cat.ITEMS)))
    selects = [f"SELECT leaf, cohort_month, '{cat.CHILDREN}', province, district, n, p1 FROM g"]
    selects += [f"SELECT leaf, cohort_month, '{item}', province, district, a{k}, v{k} FROM g WHERE a{k} > 0"
                for k, item in enumerate(cat.ITEMS)]
    return f"""
WITH patterns AS (
  SELECT leaf, cohort_month, MIN(province) AS province, MIN(district) AS district, any_mask, valid_mask, penta1_by_12m,
    COUNT(*) AS c
  FROM report_child_status WHERE {where} GROUP BY leaf, cohort_month, any_mask, valid_mask, penta1_by_12m),
g AS (
  SELECT leaf, cohort_month, MIN(province) AS province, MIN(district) AS district, SUM(c) AS n,
    SUM(penta1_by_12m * c) AS p1, {sums}
  FROM patterns GROUP BY leaf, cohort_month)
INSERT INTO report_coverage_counts (leaf, cohort_month, item, province, district, any_count, valid_count)
{" UNION ALL ".join(selects)}"""


def _schedule_groups(session: Session, as_of: date) -> list[tuple[dict[int, cat.Rule], list[str]]]:
    """Custodian provinces grouped by the schedule in force for them."""
    groups: dict[object, tuple[dict[int, cat.Rule], list[str]]] = {}
    for province in jurisdictions.provinces(session):
        row = schedules.in_force(session, province.code, as_of)
        key = row.id if row is not None else None
        if key not in groups:
            groups[key] = (cat.rules(engine.parse(row.document, VACCINES) if row is not None else None), [])
        groups[key][1].append(province.code)
    return list(groups.values())


def _is_pg(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _custodian_filter(custodians: list[str], all_groups: int) -> tuple[str, dict]:
    if all_groups == 1:
        return "1 = 1", {}
    return "p.custodian IN :custodians", {"custodians": custodians}


def _run(session: Session, sql: str, params: dict) -> None:
    stmt = text(sql)
    for name, value in params.items():
        if isinstance(value, (list, tuple)):
            kind = Uuid() if value and isinstance(value[0], uuid.UUID) else None
            stmt = stmt.bindparams(bindparam(name, expanding=True, type_=kind))
    session.execute(stmt, params)


def rebuild(session: Session, as_of: date) -> dict:
    """Recompute every status and count row from the registry's own tables."""
    pg = _is_pg(session)
    top = session.execute(select(func.max(DirtyPatient.seq))).scalar_one()
    if top is not None:
        session.execute(delete(DirtyPatient).where(DirtyPatient.seq <= top))
    if pg:
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        session.execute(text("SET LOCAL work_mem = '256MB'"))  # one hash aggregate per child, in memory
        session.execute(text("SET LOCAL maintenance_work_mem = '256MB'"))
        session.execute(text("TRUNCATE report_child_status, report_coverage_counts"))
        # one sorted primary-key build after the load instead of 700,000 random-order insertions
        session.execute(text("ALTER TABLE report_child_status DROP CONSTRAINT pk_report_child_status"))
    else:
        session.execute(delete(ChildStatus))
        session.execute(delete(CoverageCount))
    groups = _schedule_groups(session, as_of)
    doses = f"({dose_pivot()})"
    if pg:  # CREATE TABLE AS may run in parallel; INSERT ... SELECT may not
        session.execute(text(f"CREATE TEMPORARY TABLE report_dose_pivot ON COMMIT DROP AS {dose_pivot()}"))
        session.execute(text("ANALYZE report_dose_pivot"))
        doses = "report_dose_pivot"
    for rules, custodians in groups:
        where, params = _custodian_filter(custodians, len(groups))
        _run(session, status_insert(pg, rules, where, doses), params)
    if pg:
        session.execute(text("ALTER TABLE report_child_status ADD CONSTRAINT pk_report_child_status PRIMARY KEY (patient_id)"))
    session.execute(text(counts_insert("1 = 1")))
    children = session.execute(select(func.count()).select_from(ChildStatus)).scalar_one()
    return {"children": children}


def refresh(session: Session, as_of: date, limit: int) -> int:
    """Fold up to `limit` queued changes into the aggregates; returns the patients refreshed.

    Counts change by the difference between the patients' old and new status rows, so the cost
    is proportional to the patients refreshed, not to the groups they belong to."""
    if session.execute(select(DirtyPatient.seq).limit(1)).first() is None:
        return 0
    pg = _is_pg(session)
    if pg:
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
    batch = select(DirtyPatient.seq).order_by(DirtyPatient.seq).limit(limit).scalar_subquery()
    taken = session.execute(delete(DirtyPatient).where(DirtyPatient.seq.in_(batch)).returning(DirtyPatient.patient_id)).scalars()
    ids = sorted(set(taken))
    groups = _schedule_groups(session, as_of) if ids else []
    st = ChildStatus.__table__
    for i in range(0, len(ids), 1000):
        chunk = ids[i:i + 1000]
        delta: dict[tuple[str, int, str], list] = {}
        _contribute(delta, session.execute(select(st).where(st.c.patient_id.in_(chunk))).all(), -1)
        session.execute(delete(st).where(st.c.patient_id.in_(chunk)))
        for rules, custodians in groups:
            where, params = _custodian_filter(custodians, len(groups))
            _run(session, status_insert(pg, rules, f"{where} AND p.id IN :ids", f"({dose_pivot('i.patient_id IN :ids')})"),
                 {**params, "ids": chunk})
        _contribute(delta, session.execute(select(st).where(st.c.patient_id.in_(chunk))).all(), +1)
        _apply(session, delta)
    return len(ids)


def _contribute(delta: dict, rows, sign: int) -> None:
    """Add (sign=+1) or remove (-1) status rows' contributions: [any, valid, province, district]."""
    for r in rows:
        cells = [(cat.CHILDREN, 1, r.penta1_by_12m)]
        any_mask, valid_mask, k = r.any_mask, r.valid_mask, 0
        while any_mask:
            if any_mask & 1:
                cells.append((cat.ITEMS[k], 1, (valid_mask >> k) & 1))
            any_mask, k = any_mask >> 1, k + 1
        for item, a, v in cells:
            cell = delta.setdefault((r.leaf, r.cohort_month, item), [0, 0, r.province, r.district])
            cell[0] += sign * a
            cell[1] += sign * v


def _apply(session: Session, delta: dict) -> None:
    """counts += delta; a row whose count falls to zero is removed (a rebuild would not write it)."""
    ct = CoverageCount.__table__
    changed = {k: d for k, d in delta.items() if d[0] or d[1]}
    if not changed:
        return
    keys = list(changed)
    current: dict[tuple[str, int, str], tuple[int, int]] = {}
    for i in range(0, len(keys), 300):
        part = keys[i:i + 300]
        q = select(ct.c.leaf, ct.c.cohort_month, ct.c.item, ct.c.any_count, ct.c.valid_count).where(
            ct.c.leaf.in_({k[0] for k in part}), ct.c.cohort_month.in_({k[1] for k in part}), ct.c.item.in_({k[2] for k in part}))
        current.update({(r.leaf, r.cohort_month, r.item): (r.any_count, r.valid_count) for r in session.execute(q)})
    ups, gone, new = [], [], []
    for key, (da, dv, province, district) in changed.items():
        a, v = current.get(key, (0, 0))
        a, v = a + da, v + dv
        if key in current:
            (ups if a > 0 else gone).append({"k_leaf": key[0], "k_month": key[1], "k_item": key[2], "a": a, "v": v})
        elif a > 0:
            new.append({"leaf": key[0], "cohort_month": key[1], "item": key[2], "province": province, "district": district,
                        "any_count": a, "valid_count": v})
    match = (ct.c.leaf == bindparam("k_leaf"), ct.c.cohort_month == bindparam("k_month"), ct.c.item == bindparam("k_item"))
    if ups:
        session.execute(update(ct).where(*match).values(any_count=bindparam("a"), valid_count=bindparam("v")), ups)
    if gone:
        session.execute(delete(ct).where(*match), gone)
    if new:
        session.execute(insert(ct), new)


def pending(session: Session) -> int:
    return session.execute(select(func.count()).select_from(DirtyPatient)).scalar_one()
