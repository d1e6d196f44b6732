"""Immunization queries. Callers reach doses only through a patient they may reach
(registry/patients/service.reachable), so scope is enforced on the patient first."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from registry.immunizations.models import Immunization

DOSES = Immunization.__table__


def insert_dose(session: Session, row: dict) -> None:
    """`updated_at` (the sync feed's change position) starts at `recorded_at`."""
    session.execute(insert(DOSES), [{"updated_at": row["recorded_at"], **row}])


def for_patient(session: Session, patient_id: uuid.UUID) -> list[Row]:
    q = select(DOSES).where(DOSES.c.patient_id == patient_id).order_by(DOSES.c.date_given, DOSES.c.vaccine, DOSES.c.dose_number)
    return list(session.execute(q).all())


def get(session: Session, dose_id: uuid.UUID) -> Row | None:
    return session.execute(select(DOSES).where(DOSES.c.id == dose_id)).first()


def set_status(session: Session, dose_id: uuid.UUID, expected_version: int, status: str, reason_ct: bytes,
               from_statuses: tuple[str, ...] = ("completed",)) -> bool:
    res = session.execute(
        update(DOSES).where(DOSES.c.id == dose_id, DOSES.c.version == expected_version, DOSES.c.status.in_(from_statuses))
        .values(status=status, status_reason_ct=reason_ct, version=expected_version + 1, updated_at=datetime.now(UTC))
    )
    return res.rowcount == 1


def set_inferred_numbers(session: Session, numbers: dict[uuid.UUID, int]) -> None:
    """Renumber inferred doses (validation.inferred_numbers), in one statement; a changed number
    is a change for the sync feed."""
    if not numbers:
        return
    stmt = (update(DOSES).where(DOSES.c.id == bindparam("dose_id"), DOSES.c.dose_number_inferred.is_(True))
            .values(dose_number=bindparam("number"), updated_at=bindparam("now")))
    now = datetime.now(UTC)
    session.connection().execute(stmt, [{"dose_id": k, "number": v, "now": now} for k, v in numbers.items()])


def set_components_status(session: Session, main_id: uuid.UUID, status: str) -> list[Row]:
    """Void or supersede a combination dose's component rows with it; returns them as they were."""
    parts = list(session.execute(select(DOSES).where(DOSES.c.component_of == main_id,
                                                      DOSES.c.status == "completed")).all())
    if parts:
        session.execute(update(DOSES).where(DOSES.c.component_of == main_id, DOSES.c.status == "completed")
                        .values(status=status, version=DOSES.c.version + 1, updated_at=datetime.now(UTC)))
    return parts
