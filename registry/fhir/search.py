"""FHIR searches that /api/v1 has no exact twin for, as scoped queries.

Scope is part of every query (`registry/scoping.capture_clause`, the same clause /api/v1's
list uses): a Patient search without an identifier lists the caller's capture scope only, and
an Immunization search without a patient lists doses of patients in the caller's capture
scope. Searches by exact identifier go through `registry/patients/service.search` (search
scope, blind index) instead. Only clear columns are filtered on (sex, birth date, province,
district): nothing is decrypted to search. Each search has a count twin over the same query, for
`_total` and `_summary=count`.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from registry import pagination, scoping
from registry.fhir.params import DateRange
from registry.immunizations.repository import DOSES
from registry.patients.repository import PATIENTS, current
from security.access.principal import Principal


def _patients(principal: Principal, *, birth: DateRange, gender: str | None, province: str | None,
              district: str | None):
    q = select(PATIENTS).where(scoping.capture_clause(principal, PATIENTS), current())  # a merged record: once, as its survivor
    if birth.low is not None:
        q = q.where(PATIENTS.c.birth_date >= birth.low)
    if birth.high is not None:
        q = q.where(PATIENTS.c.birth_date <= birth.high)
    if gender is not None:
        q = q.where(PATIENTS.c.sex == gender)
    if province is not None:
        q = q.where(PATIENTS.c.province == province)
    if district is not None:
        q = q.where(PATIENTS.c.district == district)
    return q


def patients_in_capture(session: Session, principal: Principal, *, cursor: str | None, limit: int, **filters):
    """A page of patients in capture scope matching `filters` (birth, gender, province, district)."""
    return pagination.newest_first(session, _patients(principal, **filters), PATIENTS.c.created_at, PATIENTS.c.id,
                                   cursor=cursor, limit=limit)


def count_patients_in_capture(session: Session, principal: Principal, **filters) -> int:
    """How many patients the same search finds in all (`_total`, `_summary=count`)."""
    return _count(session, _patients(principal, **filters))


def _doses(principal: Principal, *, given: DateRange, vaccines: list[str] | None, statuses: list[str] | None):
    q = (select(DOSES, PATIENTS.c.province.label("patient_province"), PATIENTS.c.district.label("patient_district"))
         .join(PATIENTS, PATIENTS.c.id == DOSES.c.patient_id)
         .where(scoping.capture_clause(principal, PATIENTS), DOSES.c.component_of.is_(None)))
    if given.low is not None:
        q = q.where(DOSES.c.date_given >= given.low)
    if given.high is not None:
        q = q.where(DOSES.c.date_given <= given.high)
    if vaccines is not None:
        q = q.where(DOSES.c.vaccine.in_(vaccines))
    if statuses is not None:
        q = q.where(DOSES.c.status.in_(statuses))
    return q


def doses_in_capture(session: Session, principal: Principal, *, cursor: str | None, limit: int, **filters):
    """Doses (with their patient's province and district) of patients in capture scope."""
    return pagination.newest_first(session, _doses(principal, **filters), DOSES.c.recorded_at, DOSES.c.id,
                                   cursor=cursor, limit=limit)


def count_doses_in_capture(session: Session, principal: Principal, **filters) -> int:
    return _count(session, _doses(principal, **filters))


def _count(session: Session, query) -> int:
    return session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
