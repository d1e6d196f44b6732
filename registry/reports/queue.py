"""The dirty-patient queue: a write to a patient or a dose marks the patient in the same
transaction, so the aggregates can never miss a committed change (refresh.py folds it in)."""

from __future__ import annotations

import uuid

from sqlalchemy import insert
from sqlalchemy.orm import Session

from registry.reports.models import DirtyPatient


def mark(session: Session, patient_id: uuid.UUID) -> None:
    session.execute(insert(DirtyPatient.__table__).values(patient_id=patient_id))
