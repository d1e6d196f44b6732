"""Immunization records (doses given).

Invariants:
- A dose is never deleted. A mistake is fixed by voiding (status `entered-in-error`) or by
  correcting (the old row becomes `superseded` and points to its replacement through the new
  row's `supersedes_id`); both carry a reason, encrypted because staff write it freely.
- A dose recorded despite breaking a validation rule (registry/immunizations/validation.py)
  carries that rule's code in `override_rule` and the recorder's free-text reason, encrypted, in
  `override_reason_ct`; both are NULL for a dose that passed every check.
- A dose *not given* (refusal, contraindication, stock-out, child absent...) is a row with
  status `not-done` and a coded `not_done_reason`. It never counts as a dose: the schedule
  engine, due lists, certificates and coverage aggregates count status `completed` only.
- `province`/`district` are the patient's residence at the time the dose was recorded, kept in
  clear for coverage reports that never decrypt anything.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import Date, ForeignKey, Index, Integer, LargeBinary, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from security.orm import Base, UTCDateTime

STATUSES = ("completed", "entered-in-error", "superseded", "not-done")


class Immunization(Base):
    __tablename__ = "immunizations"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id"), index=True)
    custodian: Mapped[str] = mapped_column(String(32))
    province: Mapped[str] = mapped_column(String(32))
    district: Mapped[str] = mapped_column(String(32))
    facility: Mapped[str] = mapped_column(ForeignKey("facilities.code"), index=True)
    vaccine: Mapped[str] = mapped_column(String(16))
    dose_number: Mapped[int] = mapped_column(Integer)
    date_given: Mapped[date] = mapped_column(Date)
    lot_number: Mapped[str | None] = mapped_column(String(40))
    performer_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    status: Mapped[str] = mapped_column(String(20), default="completed")
    status_reason_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    # a `not-done` dose's coded reason (registry/immunizations/not_done.py); NULL otherwise
    not_done_reason: Mapped[str | None] = mapped_column(String(32))
    supersedes_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("immunizations.id"))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    override_rule: Mapped[str | None] = mapped_column(String(32))
    override_reason_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    # The change position of the sync feed (issue 5): stamped on insert and on every status change.
    # Nullable so that bulk loaders that predate it keep working; the feed reads it as
    # coalesce(updated_at, recorded_at).
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Record linkage (issue 13): the patient this dose was recorded on, when a merge moved it to
    # the survivor (NULL for a dose never moved). An unmerge moves it back and clears it.
    original_patient_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("patients.id"))

    __table_args__ = (Index(None, "district", "vaccine", "dose_number", "date_given"),)
