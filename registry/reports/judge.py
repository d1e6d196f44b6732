"""The schedule engine's per-child judgement, the single source of the valid-dose counts.

The set-based SQL (statements.py) judges only the children whose histories it provably judges
as the engine does, and flags every other child (`report_child_status.engine` = 1); this module
judges the flagged children with the engine itself, in the rebuild and the refresher alike.
`nhr reports check` and the tests use the same `judge` as their reference.

Invariants:
- A child's masks: bit i of `valid_mask` is set when the engine fills the slot of item i
  (catalogue.ITEMS) with a valid dose, whatever dose number was recorded on it; `any_mask` has
  the items the child has a completed record of, plus the valid ones (so valid <= any always).
- The doses judged are `statements.DOSES_SEEN` and the patients `statements.SELECTED_PATIENTS`,
  as in the SQL; the schedule is the one in force for the child's custodian province
  (`statements.Group.schedule`); a child of a province without one has no valid dose.
- Reads clear columns only (birth date, sex, custodian, vaccine, dose number, date); decrypts nothing.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Iterable

from sqlalchemy import Date, Integer, String, Uuid, bindparam, select, text, update
from sqlalchemy.orm import Session

from registry.reports import catalogue as cat
from registry.patients.models import Patient
from registry.reports import statements as sql
from registry.reports.models import ChildStatus
from registry.schedules import engine

POSITION = {item: i for i, item in enumerate(cat.ITEMS)}
_P1 = POSITION[cat.ZERO_DOSE_ITEM]


def judge(schedule: engine.Schedule | None, birth: date, sex: str | None,
          doses: Iterable[tuple[str, int, date]]) -> tuple[int, int]:
    """(any_mask, valid_mask) of one child whose completed doses are (vaccine, dose_number, date)."""
    doses = list(doses)
    any_mask = 0
    for vaccine, number, _ in doses:
        k = POSITION.get(f"{vaccine}-{number}")
        if k is not None:
            any_mask |= 1 << k
    valid = 0
    if schedule is not None:
        for r in engine.evaluate(schedule, birth, sex, [engine.Dose(v, n, d) for v, n, d in doses], birth,
                                     forecast=False).recorded:
            if r.status == engine.VALID:
                k = POSITION.get(f"{r.vaccine}-{r.counted_as}")
                if k is not None:
                    valid |= 1 << k
    return any_mask | valid, valid


def penta1_by_12m(birth: date, doses: Iterable[tuple[str, int, date]]) -> int:
    """1 if the child has a completed Penta-1 record before its first birthday (zero-dose rule)."""
    vaccine, number = cat.split(cat.ZERO_DOSE_ITEM)
    limit = engine.add(birth, cat.ZERO_DOSE_AGE)
    return int(any(v == vaccine and n == number and d < limit for v, n, d in doses))


def schedule_of(groups: list[sql.Group]) -> dict[str, engine.Schedule | None]:
    return {c: g.schedule for g in groups for c in g.custodians}


def doses_of(session: Session, ids: list[uuid.UUID]) -> dict[uuid.UUID, list[tuple[str, int, date]]]:
    """The doses each child's judgement sees (`DOSES_SEEN`), for a list of patients."""
    out: dict[uuid.UUID, list] = {pid: [] for pid in ids}
    stmt = text(f"SELECT i.patient_id, i.vaccine, i.dose_number, i.date_given FROM ({sql.DOSES_SEEN}) i "
                "WHERE i.patient_id IN :ids").bindparams(bindparam("ids", expanding=True, type_=Uuid())).columns(
        patient_id=Uuid(), vaccine=String(), dose_number=Integer(), date_given=Date())
    for i in range(0, len(ids), 1000):
        for pid, v, n, d in session.execute(stmt, {"ids": ids[i:i + 1000]}):
            out[pid].append((v, n, _date(d)))
    return out


def rejudge_flagged(session: Session, groups: list[sql.Group], ids: list[uuid.UUID] | None = None) -> int:
    """Judge with the engine every status row flagged `engine` = 1 (among `ids`, or all) and
    store its masks; returns how many children the engine judged. One query reads the flagged
    children with the doses they see (no list of ids sent for a rebuild)."""
    st, pt = ChildStatus.__table__, Patient.__table__
    seen = text(sql.DOSES_SEEN).columns(patient_id=Uuid(), vaccine=String(), dose_number=Integer(), date_given=Date()).subquery("i")
    stmt = (select(st.c.patient_id, pt.c.birth_date, pt.c.sex, pt.c.custodian, seen.c.vaccine, seen.c.dose_number, seen.c.date_given)
            .join(pt, pt.c.id == st.c.patient_id).outerjoin(seen, seen.c.patient_id == st.c.patient_id)
            .where(st.c.engine == 1).order_by(st.c.patient_id))
    if ids is not None:
        stmt = stmt.where(st.c.patient_id.in_(ids))
    schedules = schedule_of(groups)
    updates, current, doses = [], None, []

    def flush() -> None:
        a, v = judge(schedules.get(current.custodian), _date(current.birth_date), current.sex, doses)
        updates.append({"pid": current.patient_id, "a": a, "v": v})

    for row in session.execute(stmt):
        if current is None or row.patient_id != current.patient_id:
            if current is not None:
                flush()
            current, doses = row, []
        if row.vaccine is not None:
            doses.append((row.vaccine, row.dose_number, _date(row.date_given)))
    if current is not None:
        flush()
    if updates:
        session.execute(update(st).where(st.c.patient_id == bindparam("pid")).values(any_mask=bindparam("a"), valid_mask=bindparam("v")),
                        updates)
    return len(updates)


def _date(value) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])
