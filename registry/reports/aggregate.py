"""Building the maintained aggregates with set-based SQL (statements.py): a full rebuild, or the
rows of a few patients (the refresher). Both use the same statements, so incremental equals rebuilt.

Invariants:
- Reads only columns in clear; decrypts nothing (no cipher is even reachable from here).
- Validity follows the schedule in force today for the patient's custodian province; patients
  of a province without a schedule count as any-dose only. The SQL judges the children whose
  verdict provably equals the engine's; the others are judged by the engine (judge.py) in the
  same transaction, before the counts are summed, in the rebuild and the refresher alike.
- Dirty-queue rows are deleted *before* the statuses are computed: a change that commits later
  leaves its queue row behind and is folded in by the next refresh, never lost. A rebuild holds
  the refresher's lock from before it reads the registry's tables until it commits.
- The rebuild replaces both tables in one transaction: a reader sees the old aggregates or the
  new ones, never a mix. On PostgreSQL the per-dose pivot is computed into a temporary table
  first (CREATE TABLE AS may use parallel workers, INSERT ... SELECT may not), before the
  aggregate tables are truncated: readers wait only for the per-child part, not for the scan.
"""

from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy import Uuid, bindparam, delete, func, insert, select, text, update
from sqlalchemy.orm import Session

from registry.immunizations.vaccines import VACCINES
from registry.jurisdictions import repository as jurisdictions
from registry.reports import catalogue as cat
from registry.reports import judge
from registry.reports import statements as sql
from registry.reports.models import ChildStatus, CoverageCount, DirtyPatient
from registry.schedules import engine
from registry.schedules import service as schedules

_LOCK_KEY = 4_040_404  # PostgreSQL advisory lock: one refresher at a time
# Per-transaction settings of a PostgreSQL rebuild (the server's own settings are not ours):
# - work_mem: the per-child aggregate (about 620 bytes a child in the leader's final hash table,
#   whose limit is work_mem x hash_mem_multiplier, 2 by default) stays in memory up to about
#   1.6 million children (at 256MB it spilled to disk from about 800,000);
# - maintenance_work_mem: the status table's primary key is built in one in-memory sort.
_PG_REBUILD_SETTINGS = ("SET LOCAL work_mem = '512MB'", "SET LOCAL maintenance_work_mem = '256MB'")


def _schedule_groups(session: Session, as_of: date) -> list[sql.Group]:
    """Custodian provinces grouped by the schedule in force for them."""
    groups: dict[object, tuple[engine.Schedule | None, list[str]]] = {}
    for province in jurisdictions.provinces(session):
        row = schedules.in_force(session, province.code, as_of)
        key = row.id if row is not None else None
        if key not in groups:
            groups[key] = (engine.parse(schedules.document(session, row.id), VACCINES) if row is not None else None, [])
        groups[key][1].append(province.code)
    return [sql.Group(cat.rules(schedule), tuple(custodians), schedule) for schedule, custodians in groups.values()]


def schedule_groups(session: Session, as_of: date) -> list[sql.Group]:
    """The schedule groups a rebuild on `as_of` judges by (for `nhr reports check`)."""
    return _schedule_groups(session, as_of)


def _is_pg(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _run(session: Session, statement: str, params: dict):
    stmt = text(statement)
    for name, value in params.items():
        if isinstance(value, (list, tuple)):
            kind = Uuid() if value and isinstance(value[0], uuid.UUID) else None
            stmt = stmt.bindparams(bindparam(name, expanding=True, type_=kind))
    return session.execute(stmt, params)


def rebuild(session: Session, as_of: date) -> dict:
    """Recompute every status and count row from the registry's own tables."""
    pg = _is_pg(session)
    top = session.execute(select(func.max(DirtyPatient.seq))).scalar_one()
    if top is not None:
        session.execute(delete(DirtyPatient).where(DirtyPatient.seq <= top))
    if pg:
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        for setting in _PG_REBUILD_SETTINGS:
            session.execute(text(setting))
    groups = _schedule_groups(session, as_of)
    doses = f"({sql.dose_pivot(pg)})"
    if pg:  # CREATE TABLE AS may run in parallel; INSERT ... SELECT may not
        session.execute(text("DROP TABLE IF EXISTS report_dose_pivot"))
        session.execute(text(f"CREATE TEMPORARY TABLE report_dose_pivot ON COMMIT DROP AS {sql.dose_pivot(pg)}"))
        session.execute(text("ANALYZE report_dose_pivot"))
        doses = "report_dose_pivot"
        session.execute(text("TRUNCATE report_child_status, report_coverage_counts"))
        # one sorted primary-key build after the load instead of a million random-order insertions
        session.execute(text("ALTER TABLE report_child_status DROP CONSTRAINT pk_report_child_status"))
    else:
        session.execute(delete(ChildStatus))
        session.execute(delete(CoverageCount))
    status = f"INSERT INTO report_child_status ({sql.STATUS_COLUMNS}) {sql.status_select(pg, groups, '1 = 1', doses)}"
    children = _run(session, status, sql.group_params(groups)).rowcount
    if pg:
        session.execute(text("ALTER TABLE report_child_status ADD CONSTRAINT pk_report_child_status PRIMARY KEY (patient_id)"))
    by_engine = judge.rejudge_flagged(session, groups)
    session.execute(text(sql.counts_insert("1 = 1")))
    return {"children": children, "judged_by_engine": by_engine}


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
    if not ids:
        return 0
    groups = _schedule_groups(session, as_of)
    doses = f"({sql.dose_pivot(pg, 'i.patient_id IN :ids')})"
    status = f"INSERT INTO report_child_status ({sql.STATUS_COLUMNS}) {sql.status_select(pg, groups, 'p.id IN :ids', doses)}"
    st = ChildStatus.__table__
    for i in range(0, len(ids), 1000):
        chunk = ids[i:i + 1000]
        delta: dict[tuple[str, int, str], list] = {}
        _contribute(delta, session.execute(select(st).where(st.c.patient_id.in_(chunk))).all(), -1)
        session.execute(delete(st).where(st.c.patient_id.in_(chunk)))
        _run(session, status, {**sql.group_params(groups), "ids": chunk})
        judge.rejudge_flagged(session, groups, chunk)
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
