"""Citizen access queries: access codes, the patient bound to a citizen token, and the access
log of one patient. Nothing here takes a staff principal: a citizen reaches exactly the patient
its token names, and staff reach access codes only through a patient they may reach
(registry/patients/service.reachable)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import insert, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from registry import pagination
from registry.citizens.models import PatientAccessCode
from registry.facilities.models import Facility
from registry.patients.models import Patient
from registry.users.models import User
from security.access.permissions import CITIZEN_ROLE
from security.audit.models import AuditEventRow, AuditEventSubjectRow

CODES = PatientAccessCode.__table__
PATIENTS = Patient.__table__
EVENTS = AuditEventRow.__table__
SUBJECTS = AuditEventSubjectRow.__table__
LOGIN_ACTION = "citizen.login"


def code_of(session: Session, patient_id: uuid.UUID) -> Row | None:
    return session.execute(select(CODES).where(CODES.c.patient_id == patient_id)).first()


def insert_code(session: Session, patient_id: uuid.UUID, code_hash: str, issued_at: datetime, issued_by: uuid.UUID) -> None:
    session.execute(insert(CODES), [{"patient_id": patient_id, "code_hash": code_hash, "issued_at": issued_at,
                                     "issued_by_user_id": issued_by, "generation": 1}])


def replace_code(session: Session, patient_id: uuid.UUID, code_hash: str, issued_at: datetime, issued_by: uuid.UUID) -> int:
    """Replace the code (or issue a first one, e.g. for patients loaded in bulk) -> generation."""
    res = session.execute(update(CODES).where(CODES.c.patient_id == patient_id).values(
        code_hash=code_hash, issued_at=issued_at, issued_by_user_id=issued_by, generation=CODES.c.generation + 1))
    if res.rowcount == 0:
        insert_code(session, patient_id, code_hash, issued_at, issued_by)
    return session.execute(select(CODES.c.generation).where(CODES.c.patient_id == patient_id)).scalar_one()


def patient_and_generation(session: Session, patient_id: uuid.UUID) -> tuple[Row | None, int | None]:
    """The patient a citizen token names, with its code's current generation (one statement)."""
    row = session.execute(
        select(PATIENTS, CODES.c.generation.label("code_generation"))
        .join(CODES, CODES.c.patient_id == PATIENTS.c.id).where(PATIENTS.c.id == patient_id)
    ).first()
    return (row, row.code_generation) if row is not None else (None, None)


def access_events(session: Session, patient_ids: list[uuid.UUID], *, cursor: str | None, limit: int,
                  include_own_views: bool) -> tuple[list[Row], str | None]:
    """Every audit event about these patients (a survivor and the records merged into it), as
    the event's patient or one of its subjects, newest first. The citizen's own views are left out unless asked for; citizen logins (with
    this code, or failed attempts on this health ID) always stay in."""
    q = select(EVENTS).where(or_(EVENTS.c.patient_id.in_(patient_ids),
                                 EVENTS.c.id.in_(select(SUBJECTS.c.event_id).where(SUBJECTS.c.patient_id.in_(patient_ids)))))
    if not include_own_views:
        q = q.where(or_(EVENTS.c.actor_role.is_(None), EVENTS.c.actor_role != CITIZEN_ROLE, EVENTS.c.action == LOGIN_ACTION))
    return pagination.newest_first(session, q, EVENTS.c.occurred_at, EVENTS.c.id, cursor=cursor, limit=limit)


def facility_names(session: Session, codes: set[str]) -> dict[str, str]:
    if not codes:
        return {}
    return dict(session.execute(select(Facility.code, Facility.name).where(Facility.code.in_(sorted(codes)))).all())


def staff_names(session: Session, user_ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    if not user_ids:
        return {}
    return dict(session.execute(select(User.id, User.display_name).where(User.id.in_(sorted(user_ids, key=str)))).all())
