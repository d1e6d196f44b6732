"""The patients a due list examines and their doses, in keyset pages (newest registered first).

Which patients belong to a place:
- a facility: patients whose home facility it is;
- a union council: patients whose home facility is located in that union council (the
  facility's `jurisdiction_code`). A child's residence is kept only down to district level (in
  clear), so the home facility is the finest place the registry knows.
A record merged into another (issue 13) is never listed: its survivor carries its doses.
Either way only patients in the caller's capture scope (registry/scoping), so an official never
sees a child of the place who lives outside its jurisdiction.
"""

from __future__ import annotations

import uuid
from typing import Iterator

from sqlalchemy import select
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from registry import pagination, scoping
from registry.facilities.models import Facility
from registry.immunizations.models import Immunization
from registry.patients.models import Patient
from security.access.principal import Principal

PATIENTS = Patient.__table__
DOSES = Immunization.__table__
FACILITIES = Facility.__table__


def patients_of_facility(principal: Principal, code: str):
    return select(PATIENTS).where(PATIENTS.c.home_facility == code, scoping.capture_clause(principal, PATIENTS),
                                  PATIENTS.c.merged_into.is_(None))


def patients_of_union_council(principal: Principal, code: str):
    inside = select(FACILITIES.c.code).where(FACILITIES.c.jurisdiction_code == code)
    return select(PATIENTS).where(PATIENTS.c.home_facility.in_(inside), scoping.capture_clause(principal, PATIENTS),
                                  PATIENTS.c.merged_into.is_(None))


def batches(session: Session, query, cursor: str | None, batch: int) -> Iterator[list[Row]]:
    """The rows of `query` after `cursor`, newest first by (created_at, id), `batch` at a time.
    Raises InvalidInput (field cursor) for a cursor that is not one of ours."""
    while True:
        rows, cursor = pagination.newest_first(session, query, PATIENTS.c.created_at, PATIENTS.c.id, cursor=cursor, limit=batch)
        if rows:
            yield rows
        if cursor is None:
            return


def doses_of(session: Session, patient_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Row]]:
    out: dict[uuid.UUID, list[Row]] = {pid: [] for pid in patient_ids}
    if patient_ids:
        q = select(DOSES.c.patient_id, DOSES.c.vaccine, DOSES.c.dose_number, DOSES.c.date_given, DOSES.c.status) \
            .where(DOSES.c.patient_id.in_(patient_ids))
        for r in session.execute(q).all():
            out[r.patient_id].append(r)
    return out


def cursor_after(row: Row) -> str:
    return pagination.encode(row.created_at, row.id)
