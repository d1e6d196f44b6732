"""Reading the audit log, scoped to the auditor's jurisdiction.

An event belongs to a jurisdiction through its patient (`patient_province`/`patient_district`)
or, when it concerns no patient (logins, refusals before a patient was found), through its
actor. National auditors see everything.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, or_, select, true
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from registry import pagination
from security.access.principal import Principal
from security.audit.models import AuditEventRow, AuditEventSubjectRow

EVENTS = AuditEventRow.__table__
SUBJECTS = AuditEventSubjectRow.__table__


@dataclass
class EventFilter:
    patient_id: uuid.UUID | None = None
    actor_user_id: uuid.UUID | None = None
    action: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    break_glass: bool | None = None
    facility: str | None = None  # the actor's facility (actor_scope_code of a facility-level actor)
    purpose_of_use: str | None = None


def _scope(principal: Principal):
    s = principal.scope
    if s.level == "national":
        return true()
    col_p, col_a = (EVENTS.c.patient_province, EVENTS.c.actor_province) if s.level == "province" else (EVENTS.c.patient_district, EVENTS.c.actor_district)
    value = s.province if s.level == "province" else s.district
    return or_(col_p == value, and_(EVENTS.c.patient_id.is_(None), col_a == value))


def filtered(principal: Principal, f: EventFilter):
    """The events in the principal's jurisdiction matching `f` (no order, no limit)."""
    q = select(EVENTS).where(_scope(principal))
    if f.patient_id:
        q = q.where(or_(EVENTS.c.patient_id == f.patient_id,
                        EVENTS.c.id.in_(select(SUBJECTS.c.event_id).where(SUBJECTS.c.patient_id == f.patient_id))))
    for column, value in ((EVENTS.c.actor_user_id, f.actor_user_id), (EVENTS.c.action, f.action),
                          (EVENTS.c.outcome, f.outcome), (EVENTS.c.break_glass, f.break_glass),
                          (EVENTS.c.purpose_of_use, f.purpose_of_use)):
        if value is not None:
            q = q.where(column == value)
    if f.facility is not None:
        q = q.where(EVENTS.c.actor_scope_level == "facility", EVENTS.c.actor_scope_code == f.facility)
    if f.since:
        q = q.where(EVENTS.c.occurred_at >= f.since)
    if f.until:
        q = q.where(EVENTS.c.occurred_at < f.until)
    return q


def filter_names(f: EventFilter) -> list[str]:
    """The names of the filters in use, never their values (for the audit event's detail)."""
    return sorted(k for k, v in vars(f).items() if v is not None)


def query(session: Session, principal: Principal, f: EventFilter, *, cursor: str | None, limit: int) -> tuple[list[Row], str | None]:
    return pagination.newest_first(session, filtered(principal, f), EVENTS.c.occurred_at, EVENTS.c.id,
                                   cursor=cursor, limit=limit)
