"""Dose input and output shapes."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from registry.immunizations.vaccines import VACCINES


def _vaccine(v: str | None) -> str | None:
    if v is None:
        return None
    v = v.strip().upper()
    if v not in VACCINES:
        raise ValueError(f"must be one of {', '.join(VACCINES)}")
    return v


def _not_future(v: date | None) -> date | None:
    if v is not None and v > date.today():
        raise ValueError("date given cannot be in the future")
    return v


class DoseCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"vaccine": "PENTA", "dose_number": 1, "date_given": "2026-10-13", "lot_number": "PN2026-114"}]})

    id: uuid.UUID | None = Field(None, description="client-generated UUID, for doses recorded offline")
    vaccine: str = Field(description=f"one of {', '.join(VACCINES)}")
    dose_number: int = Field(ge=0, le=10)
    date_given: date
    lot_number: str | None = Field(None, min_length=1, max_length=40, pattern=r"^[A-Za-z0-9./ -]+$")

    _v = field_validator("vaccine")(_vaccine)
    _d = field_validator("date_given")(_not_future)


class DoseCorrection(BaseModel):
    """The corrected values (only those that change) and why. The old record is kept, superseded."""

    model_config = ConfigDict(extra="forbid")
    vaccine: str | None = None
    dose_number: int | None = Field(None, ge=0, le=10)
    date_given: date | None = None
    lot_number: str | None = Field(None, min_length=1, max_length=40, pattern=r"^[A-Za-z0-9./ -]+$")
    reason: str = Field(min_length=3, max_length=500)

    _v = field_validator("vaccine")(_vaccine)
    _d = field_validator("date_given")(_not_future)


class DoseVoid(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=3, max_length=500)


class DoseView(BaseModel):
    id: uuid.UUID
    patient_id: uuid.UUID
    vaccine: str
    dose_number: int
    date_given: date
    lot_number: str | None
    facility: str
    performer_id: uuid.UUID
    status: str
    status_reason: str | None
    supersedes_id: uuid.UUID | None
    recorded_at: datetime
    version: int
