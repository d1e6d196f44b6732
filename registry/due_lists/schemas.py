"""What a due list returns: one row per child with something due or overdue in the range."""

from __future__ import annotations

import uuid
from datetime import date

from pydantic import BaseModel, Field


class DueDose(BaseModel):
    series: str
    vaccine: str
    dose_number: int
    status: str = Field(description="due or overdue (as of the range's first day)")
    earliest: date
    recommended: date
    latest: date = Field(description="overdue after this date")


class DueRow(BaseModel):
    patient_id: uuid.UUID
    given_name: str | None
    family_name: str | None
    guardian_name: str | None
    phone: str | None
    sex: str
    birth_date: date
    home_facility: str
    doses: list[DueDose]


class DueList(BaseModel):
    place: str = Field(description="the facility or union council code")
    kind: str = Field(description="facility or union_council")
    date_from: date = Field(serialization_alias="from")
    date_to: date = Field(serialization_alias="to")
    items: list[DueRow]
    next_cursor: str | None
    scanned: int = Field(description="patients examined for this page (each is evaluated against the schedule)")
