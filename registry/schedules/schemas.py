"""What the schedule endpoint returns: each recorded dose judged, each future dose dated."""

from __future__ import annotations

import uuid
from datetime import date

from pydantic import BaseModel, Field


class ScheduleRef(BaseModel):
    code: str
    version: str
    jurisdiction: str = Field(description="the country or province whose schedule is in force for the patient")
    effective_from: date


class DoseEvaluation(BaseModel):
    vaccine: str
    dose_number: int | None = Field(description="as recorded; null when NHR inferred it (see counted_as)")
    date_given: date
    status: str = Field(description="valid, invalid or not_in_schedule")
    reason: str | None = Field(None, description="for invalid doses: too_early_for_age, interval_too_short, "
                                                  "after_maximum_age, duplicate or series_complete")
    series: str | None = None
    counted_as: int | None = Field(None, description="the series dose a valid dose counts as")


class DoseForecast(BaseModel):
    series: str
    vaccine: str
    dose_number: int
    status: str = Field(description="due, overdue, not_yet_due or not_applicable (past the maximum age)")
    earliest: date
    recommended: date
    latest: date = Field(description="overdue after this date")


class PatientSchedule(BaseModel):
    patient_id: uuid.UUID
    as_of: date
    schedule: ScheduleRef
    doses: list[DoseEvaluation]
    forecast: list[DoseForecast]
