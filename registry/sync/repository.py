"""Queries of offline sync: batch receipts, and the facility feed as a keyset over change positions.

The feed's position of a row is (changed_at, kind, id): patients (kind 0) change at `updated_at`,
doses (kind 1) at `coalesce(updated_at, recorded_at)`. Both are scoped to one facility's
catchment (patients whose home facility it is); the caller has checked the facility's scope.
"""

from __future__ import annotations

import uuid
from collections import namedtuple
from datetime import datetime

from sqlalchemy import and_, func, insert, or_, select, true, type_coerce
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from registry.bulk.writer import insert_rows, rows_by_ids
from registry.immunizations.models import Immunization
from registry.patients.models import Patient
from registry.sync.models import SyncReceipt
from registry.users.models import User
from security.access.principal import Principal
from security.orm import UTCDateTime

RECEIPTS = SyncReceipt.__table__
PATIENTS = Patient.__table__
DOSES = Immunization.__table__
PATIENT, DOSE = 0, 1
DOSE_CHANGED = type_coerce(func.coalesce(DOSES.c.updated_at, DOSES.c.recorded_at), UTCDateTime).label("changed_at")

Position = tuple[datetime, int, uuid.UUID]


def receipt(session: Session, principal: Principal, kind: str, record_id: uuid.UUID) -> Row | None:
    """The receipt of (kind, record id) if the caller may see it (see `receipts`), else None."""
    row = session.execute(select(RECEIPTS).where(RECEIPTS.c.kind == kind, RECEIPTS.c.record_id == record_id)).first()
    return row if row is not None and _writers_in_reach(session, principal, {row.user_id}) else None


_Receipt = namedtuple("_Receipt", ("record_id", "content_mac", "result_id"))


def receipts(session: Session, principal: Principal, kind: str, record_ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple]:
    """The receipts of `kind` for `record_ids` that the caller may see, by record id (two queries at most).

    A receipt is the caller's own upload or one from its own facility (a device shared by a
    clinic's staff). Anyone else's is treated as absent, so its item goes through the services and
    gets the answer it would get if no receipt existed: a receipt's existence, and its content MAC
    (an oracle for guessed names and birth dates), stay with the uploader's facility."""
    columns = ("record_id", "content_mac", "result_id", "user_id")
    rows = rows_by_ids(session, RECEIPTS, columns, "record_id", record_ids, {"kind": kind})
    allowed = _writers_in_reach(session, principal, {r[3] for r in rows})
    return {r[0]: _Receipt(*r[:3]) for r in rows if r[3] in allowed}


def _writers_in_reach(session: Session, principal: Principal, writers: set) -> set:
    """The uploaders among `writers` whose receipts `principal` may see: itself, its facility's users."""
    mine = {w for w in writers if w == principal.user_id}
    others = writers - mine
    if others and principal.facility:
        users = User.__table__
        mine |= set(session.execute(select(users.c.id).where(users.c.id.in_(others),
                                                             users.c.facility_code == principal.facility)).scalars())
    return mine


def add_receipts(session: Session, rows: list[dict]) -> None:
    insert_rows(session, RECEIPTS, rows)


def add_receipt(session: Session, row: dict) -> None:
    session.execute(insert(RECEIPTS), [row])


def _after(ts, kind: int, id_col, cursor: Position | None):
    if cursor is None:
        return true()
    c_ts, c_kind, c_id = cursor
    if kind > c_kind:
        return ts >= c_ts
    if kind < c_kind:
        return ts > c_ts
    return or_(ts > c_ts, and_(ts == c_ts, id_col > c_id))


def patients_after(session: Session, facility: str, cursor: Position | None, limit: int) -> list[Row]:
    q = (select(PATIENTS).where(PATIENTS.c.home_facility == facility, _after(PATIENTS.c.updated_at, PATIENT, PATIENTS.c.id, cursor))
         .order_by(PATIENTS.c.updated_at, PATIENTS.c.id).limit(limit))
    return list(session.execute(q).all())


def doses_after(session: Session, facility: str, cursor: Position | None, limit: int) -> list[Row]:
    q = (select(DOSES, DOSE_CHANGED).join(PATIENTS, PATIENTS.c.id == DOSES.c.patient_id)
         .where(PATIENTS.c.home_facility == facility, _after(DOSE_CHANGED, DOSE, DOSES.c.id, cursor),
                DOSES.c.component_of.is_(None))
         .order_by(DOSE_CHANGED, DOSES.c.id).limit(limit))
    return list(session.execute(q).all())


def doses_of(session: Session, patient_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Row]]:
    if not patient_ids:
        return {}
    out: dict[uuid.UUID, list[Row]] = {pid: [] for pid in patient_ids}
    q = select(DOSES).where(DOSES.c.patient_id.in_(patient_ids), DOSES.c.component_of.is_(None)).order_by(DOSES.c.date_given, DOSES.c.vaccine, DOSES.c.dose_number)
    for row in session.execute(q).all():
        out[row.patient_id].append(row)
    return out


