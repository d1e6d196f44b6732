"""AEFI queries. Lists and counts take the acting principal: scope is part of the query
(registry/scoping: an official's jurisdiction by the patient's residence, a clinic's own
reporting facility). Counts are one GROUP BY over clear columns: nothing is decrypted."""

from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy import case, func, insert, or_, select
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from registry import pagination, scoping
from registry.aefi.models import AdverseEvent
from security.access.principal import Principal

EVENTS = AdverseEvent.__table__


def insert_event(session: Session, row: dict) -> None:
    session.execute(insert(EVENTS), [row])


def for_patient(session: Session, patient_id: uuid.UUID) -> list[Row]:
    q = select(EVENTS).where(EVENTS.c.patient_id == patient_id).order_by(EVENTS.c.onset_date, EVENTS.c.reported_at)
    return list(session.execute(q).all())


def _filtered(principal: Principal, q, *, vaccine: str | None, lot_number: str | None,
              onset_from: date | None, onset_to: date | None):
    q = q.where(scoping.capture_clause(principal, EVENTS, facility_column="facility"))
    if vaccine:
        q = q.where(EVENTS.c.vaccine == vaccine)
    if lot_number:
        q = q.where(EVENTS.c.lot_number == lot_number)
    if onset_from:
        q = q.where(EVENTS.c.onset_date >= onset_from)
    if onset_to:
        q = q.where(EVENTS.c.onset_date <= onset_to)
    return q


def list_in_scope(session: Session, principal: Principal, *, cursor: str | None, limit: int, **filters) -> tuple[list[Row], str | None]:
    q = _filtered(principal, select(EVENTS), **filters)
    return pagination.newest_first(session, q, EVENTS.c.reported_at, EVENTS.c.id, cursor=cursor, limit=limit)


def counts_in_scope(session: Session, principal: Principal, **filters) -> list[Row]:
    serious = func.sum(case((EVENTS.c.seriousness != "non_serious", 1), else_=0))
    deaths = func.sum(case((or_(EVENTS.c.seriousness == "death", EVENTS.c.outcome == "died"), 1), else_=0))
    q = select(EVENTS.c.vaccine, EVENTS.c.lot_number, func.count().label("reports"), serious.label("serious"),
               deaths.label("deaths"))
    q = _filtered(principal, q, **filters).group_by(EVENTS.c.vaccine, EVENTS.c.lot_number)
    return list(session.execute(q.order_by(EVENTS.c.vaccine, EVENTS.c.lot_number)).all())
