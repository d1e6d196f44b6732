"""Loaded immunization schedules (issue 4).

Invariants:
- A schedule is data: its whole document is kept as loaded (`document`), with the columns that
  choose it pulled out. Rows are never changed: a new version is a new row.
- The schedule in force for a patient on a date is the latest `effective_from` (then the latest
  loaded) of the patient's custodian province, else of the country.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import JSON, Date, Index, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from security.orm import Base, UTCDateTime


class ScheduleRow(Base):
    __tablename__ = "schedules"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    code: Mapped[str] = mapped_column(String(40))
    version: Mapped[str] = mapped_column(String(40))
    jurisdiction_code: Mapped[str] = mapped_column(String(32))
    effective_from: Mapped[date] = mapped_column(Date)
    document: Mapped[dict] = mapped_column(JSON)
    loaded_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("code", "version", "jurisdiction_code"),
        Index(None, "jurisdiction_code", "effective_from"),
    )
