"""What a guardian sees in the citizen view, and what staff see when they issue a code."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field


class CitizenLogin(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"health_id": "1234-5678-9012", "access_code": "K7Q4-M9PX-2RC"}]})
    health_id: str = Field(min_length=1, max_length=32, description="the child's health ID, as printed on the card")
    access_code: str = Field(min_length=1, max_length=32, description="the access code printed on the card")


class CitizenToken(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    role: str = "citizen"


class Place(BaseModel):
    code: str
    name: str | None


class CitizenRecord(BaseModel):
    """The child's record as the guardian sees it: identity, not contact details."""

    health_id: str
    given_name: str
    family_name: str | None
    sex: str
    birth_date: date
    guardian_name: str | None
    guardian_relationship: str | None
    district: Place
    home_facility: Place


class CitizenDose(BaseModel):
    vaccine: str
    dose_number: int
    date_given: date
    facility: Place
    status: str = Field(description="completed, entered-in-error (voided) or superseded (corrected by a later entry)")
    voided: bool
    superseded: bool
    recorded_at: datetime


class AccessLogEntry(BaseModel):
    """One access to the child's record. `facility` is set when the person acting works at a
    facility, `office` when they work for a district, province or national office. Staff names
    appear only where the registry is configured to show them."""

    occurred_at: datetime
    action: str
    outcome: str = Field(description="success, denied, not_found, invalid, conflict, unauthenticated or error")
    role: str | None = Field(description="clinic_worker, health_official, auditor, admin, citizen; null for a failed login")
    purpose_of_use: str | None = Field(description="HL7 PurposeOfUse: TREAT, ETREAT (emergency), PUBHLTH, ...")
    emergency: bool = Field(description="break-glass: an emergency access outside the usual scope, reviewed by auditors")
    outside_usual_scope: bool
    facility: Place | None = None
    office: Place | None = None
    staff_name: str | None = None


class AccessLogPage(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [{
        "occurred_at": "2026-11-20T09:14:03Z", "action": "patient.read", "outcome": "success", "role": "health_official",
        "purpose_of_use": "ETREAT", "emergency": True, "outside_usual_scope": True, "facility": None,
        "office": {"code": "PK-SD", "name": "Sindh"}, "staff_name": None}], "next_cursor": None}]})
    items: list[AccessLogEntry]
    next_cursor: str | None


class AccessCodeIssued(BaseModel):
    """A new access code, shown once: print it on the card. The previous code no longer works."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "patient_id": "6f1c2b1e-9a51-4c55-9d0e-2f3a4b5c6d7e", "access_code": "K7Q4-M9PX-2RC", "generation": 2,
        "issued_at": "2026-11-22T01:40:00Z"}]})
    patient_id: uuid.UUID
    access_code: str
    generation: int
    issued_at: datetime
