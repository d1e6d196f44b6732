"""AEFI reports.

Invariants:
- A report is linked to one dose (`immunization_id`) and copies what counts need from it
  (vaccine, lot number) and from the patient (custodian, residence province and district), so
  that counts by vaccine and lot run on this table alone and never decrypt anything.
- Codes (symptoms, seriousness, outcome) are stored in clear with the coded list's version
  (`coding`); the reporter's free-text notes are AES-256-GCM ciphertext (`notes_ct`), bound to
  this table, column, row id and the patient's custodian.
- `facility` is the reporting facility; a clinic worker's scope over reports is its facility.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import JSON, Date, ForeignKey, Index, Integer, LargeBinary, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from security.orm import Base, UTCDateTime


class AdverseEvent(Base):
    __tablename__ = "adverse_events"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    immunization_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("immunizations.id"), index=True)
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id"), index=True)
    custodian: Mapped[str] = mapped_column(String(32))
    province: Mapped[str] = mapped_column(String(32))
    district: Mapped[str] = mapped_column(String(32))
    facility: Mapped[str] = mapped_column(ForeignKey("facilities.code"))
    vaccine: Mapped[str] = mapped_column(String(16))
    lot_number: Mapped[str | None] = mapped_column(String(40))
    onset_date: Mapped[date] = mapped_column(Date)
    symptoms: Mapped[list] = mapped_column(JSON)
    seriousness: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(32))
    coding: Mapped[str] = mapped_column(String(32))
    notes_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    reported_by: Mapped[uuid.UUID] = mapped_column(Uuid)
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index(None, "district", "vaccine", "lot_number"),
        Index(None, "facility", "reported_at", "id"),
        Index(None, "reported_at", "id"),
    )
