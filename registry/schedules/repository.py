"""Schedule queries: the schedule in force for a province on a date, its document, a place's country.

Kept apart from the service (which imports patients and the service context) so that the
per-process cache (cache.py), the runtime that holds it and the reports can ask for the
schedule in force without importing the service layer: this is what broke the import cycle
context -> runtime -> schedules.cache -> schedules.service -> context.
"""

from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.jurisdictions import repository as jurisdictions
from registry.schedules.models import ScheduleRow


def country_of(session: Session, code: str) -> str | None:
    place = jurisdictions.get(session, code)
    while place is not None and place.parent_code is not None:
        place = jurisdictions.get(session, place.parent_code)
    return place.code if place is not None else None


def in_force(session: Session, custodian: str, as_of: date, *, country: str | None = None):
    """The latest effective schedule of the province, else of its country, in one query: a row
    with id, code, version, jurisdiction_code and effective_from (not the document: `document`).
    `country` saves looking up the province's country (ScheduleCache remembers it)."""
    country = country or country_of(session, custodian)
    return session.execute(in_force_statement(custodian, country, as_of)).first()


def in_force_statement(custodian, country: str | None, as_of: date):
    """`in_force`'s query; `custodian` a value or an SQL expression (the dose on the event loop
    passes its patient's custodian as a subquery, registry/immunizations/async_record.py)."""
    t = ScheduleRow.__table__
    return (select(t.c.id, t.c.code, t.c.version, t.c.jurisdiction_code, t.c.effective_from)
            .where(t.c.jurisdiction_code.in_([c for c in (custodian, country) if c is not None]), t.c.effective_from <= as_of)
            .order_by((t.c.jurisdiction_code == custodian).desc(), t.c.effective_from.desc(), t.c.loaded_at.desc())
            .limit(1))


def document(session: Session, schedule_id: uuid.UUID) -> dict:
    t = ScheduleRow.__table__
    return session.execute(select(t.c.document).where(t.c.id == schedule_id)).scalar_one()
