"""AEFI input and output shapes. Codes are checked against the current coded list (codes.py)."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from registry.aefi import codes
from registry.text import Text


def _one_of(kind: str, allowed: dict[str, str], value: str) -> str:
    value = value.strip().lower()
    if value not in allowed:
        raise ValueError(f"{kind} must be one of {', '.join(allowed)}")
    return value


class AdverseEventCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"onset_date": "2026-07-14", "symptoms": ["fever", "persistent_inconsolable_crying"],
         "seriousness": "non_serious", "outcome": "recovered", "notes": "settled after paracetamol"}]})

    onset_date: date
    symptoms: list[str] = Field(min_length=1, max_length=10, description="codes from the AEFI coded list (docs/field-work.md)",
                                json_schema_extra={"items": {"type": "string", "enum": list(codes.symptoms())}, "uniqueItems": True})
    seriousness: str = Field(description="non_serious, or a WHO serious criterion: death, life_threatening, hospitalisation, "
                                         "disability, congenital_anomaly, other_medically_important",
                             json_schema_extra={"enum": list(codes.seriousness())})
    outcome: str = Field(description="recovered, recovering, not_recovered, recovered_with_sequelae, died, unknown",
                         json_schema_extra={"enum": list(codes.outcomes())})
    notes: Text | None = Field(None, min_length=1, max_length=2000, description="free text, stored encrypted")

    @field_validator("symptoms")
    @classmethod
    def _symptoms(cls, v: list[str]) -> list[str]:
        out = [_one_of("each symptom", codes.symptoms(), s) for s in v]
        if len(set(out)) != len(out):
            raise ValueError("a symptom is listed twice")
        return out

    @field_validator("seriousness")
    @classmethod
    def _seriousness(cls, v: str) -> str:
        return _one_of("seriousness", codes.seriousness(), v)

    @field_validator("outcome")
    @classmethod
    def _outcome(cls, v: str) -> str:
        return _one_of("outcome", codes.outcomes(), v)


class AdverseEventView(BaseModel):
    id: uuid.UUID
    immunization_id: uuid.UUID
    patient_id: uuid.UUID
    vaccine: str
    lot_number: str | None
    facility: str
    onset_date: date
    symptoms: list[str]
    seriousness: str
    serious: bool
    outcome: str
    coding: str = Field(description="the coded list and version the report was coded with")
    notes: str | None
    reported_by: uuid.UUID
    reported_at: datetime


class AdverseEventPage(BaseModel):
    items: list[AdverseEventView]
    next_cursor: str | None


class AdverseEventCount(BaseModel):
    vaccine: str
    lot_number: str | None
    reports: int
    serious: int
    deaths: int = Field(description="reports whose seriousness is death or whose outcome is died")


class AdverseEventCounts(BaseModel):
    coding: str
    groups: list[AdverseEventCount]
    total: int
