"""Dose input and output shapes."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from registry.immunizations import not_done
from registry.immunizations.vaccines import VACCINES
from registry.text import Text


def _vaccine(v: str | None) -> str | None:
    if v is None:
        return None
    v = v.strip().upper()
    if v not in VACCINES:
        raise ValueError(f"must be one of {', '.join(VACCINES)}")
    return v


def _not_done_reason(v: str | None, info: ValidationInfo) -> str | None:
    """Required (a code of the value set) for status `not-done`, absent otherwise."""
    if info.data.get("status", "completed") != not_done.STATUS:
        if v is not None:
            raise ValueError("only for a dose recorded with status not-done")
        return None
    if v is None:
        raise ValueError(f"required when status is not-done: one of {', '.join(not_done.reasons())}")
    return not_done.check(v.strip().lower())


_OVERRIDE = Field(None, min_length=10, max_length=500,
                  description="record the dose even though it breaks a validation rule (duplicate, or invalid by the "
                              "schedule), and say why; stored encrypted, and the override is audited")


class DoseCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"vaccine": "PENTA", "dose_number": 1, "date_given": "2026-10-13", "lot_number": "PN2026-114"}]})

    id: uuid.UUID | None = Field(None, description="client-generated UUID, for doses recorded offline")
    vaccine: str = Field(description=f"one of {', '.join(VACCINES)}", json_schema_extra={"enum": list(VACCINES)})
    dose_number: int = Field(ge=0, le=10)
    date_given: date
    lot_number: str | None = Field(None, min_length=1, max_length=40, pattern=r"^[A-Za-z0-9./ -]+$")
    override_reason: Text | None = _OVERRIDE
    status: Literal["completed", "not-done"] = Field(
        "completed", description="`not-done`: the due dose was NOT given (refusal, contraindication, stock-out, child "
                                 "absent...); it never counts as a dose. Give `not_done_reason`; no lot number")
    not_done_reason: str | None = Field(None, validate_default=True, description=(
        "for status not-done only, one of: " + ", ".join(not_done.reasons()) + " (see docs/field-work.md)"))

    _v = field_validator("vaccine")(_vaccine)
    _ndr = field_validator("not_done_reason")(_not_done_reason)


class DoseCorrection(BaseModel):
    """The corrected values (only those that change) and why. The old record is kept, superseded."""

    model_config = ConfigDict(extra="forbid")
    vaccine: str | None = Field(None, json_schema_extra={"enum": list(VACCINES)})
    dose_number: int | None = Field(None, ge=0, le=10)
    date_given: date | None = None
    lot_number: str | None = Field(None, min_length=1, max_length=40, pattern=r"^[A-Za-z0-9./ -]+$")
    reason: Text = Field(min_length=3, max_length=500)
    override_reason: Text | None = _OVERRIDE

    _v = field_validator("vaccine")(_vaccine)


class DoseVoid(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Text = Field(min_length=3, max_length=500)


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
    validity: str | None = Field(None, description="by the schedule in force today: valid, invalid or not_in_schedule "
                                                   "(null for a dose that is not completed, or with no schedule)")
    validity_reason: str | None = Field(None, description="why an invalid dose is invalid (a schedule rule code)")
    override_rule: str | None = Field(None, description="the rule this dose was recorded in spite of, with an override")
    override_reason: str | None = Field(None, description="the recorder's reason for the override")
    not_done_reason: str | None = Field(None, description="status not-done: why the dose was not given (a code)")
