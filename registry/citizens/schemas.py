"""What a guardian sees in the citizen view, and what staff see when they issue a code."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field


class CitizenLogin(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"health_id": "0302-1711-7681", "access_code": "K7Q4-M9PX-2RC"}]})
    health_id: str = Field(min_length=1, max_length=32, description="the child's health ID, as printed on the card")
    access_code: str = Field(min_length=1, max_length=32, description="the access code printed on the card")


class CitizenToken(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "access_token": (
            "eyJhbGciOiJIUzI1NiIsInR5cCI6ImF0K2p3dCJ9.eyJuYW1lIjoiY2l0aXplbiIsInJvbGUiOiJjaXRpemVuIiwic2NvcGVfbGV2ZWwiOiJw"
            "YXRpZW50Iiwic2NvcGVfY29kZSI6IjZmMWMyYjFlOWE1MTRjNTU5ZDBlMmYzYTRiNWM2ZDdlIiwicHJvdiI6IlBLLVBCIiwiZGlzdCI6IlBLLVBC"
            "LUxBSCIsImdlbiI6MiwiaXNzIjoibmhyIiwiYXVkIjoibmhyLWFwaSIsInN1YiI6IjZmMWMyYjFlLTlhNTEtNGM1NS05ZDBlLTJmM2E0YjVjNmQ3"
            "ZSIsImlhdCI6MTc5NTQxMjQwMCwibmJmIjoxNzk1NDEyNDAwLCJleHAiOjE3OTU0MTMwMDAsImp0aSI6Ijc5NTQxZTk2YjFhOTQwZmFiYzEyNTc5"
            "MTJmZTY2MmE0In0.3QtAlCqwK5ELAMDf25kaFYKs6qbu3m-8LF8TIL_Sa6A"),
        "token_type": "bearer", "expires_in": 600, "role": "citizen"}]})

    access_token: str
    token_type: str = "bearer"
    expires_in: int
    role: str = "citizen"


class Place(BaseModel):
    code: str
    name: str | None


class CitizenRecord(BaseModel):
    """The child's record as the guardian sees it: identity, not contact details."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "health_id": "0302-1711-7681", "given_name": "Ayesha", "family_name": "Khan", "sex": "female",
        "birth_date": "2026-03-14", "guardian_name": "Sana Khan", "guardian_relationship": "mother",
        "district": {"code": "PK-PB-LAH", "name": "Lahore"},
        "home_facility": {"code": "F-LAH-02", "name": "BHU Example Town"}}]})

    health_id: str
    given_name: str
    family_name: str | None
    sex: str
    birth_date: date
    guardian_name: str | None
    guardian_relationship: str | None
    district: Place
    home_facility: Place


# The doses of one child as the citizen view lists them (an OPV entry voided and re-entered).
EXAMPLE_DOSES = [
    {"vaccine": "BCG", "dose_number": 1, "date_given": "2026-03-15", "facility": {"code": "F-LAH-02", "name": "BHU Example Town"},
     "status": "completed", "voided": False, "superseded": False, "recorded_at": "2026-03-15T06:12:40.331000Z",
     "reported": False, "code_text": None},
    {"vaccine": "OPV", "dose_number": 1, "date_given": "2026-04-26", "facility": {"code": "F-LAH-02", "name": "BHU Example Town"},
     "status": "entered-in-error", "voided": True, "superseded": False, "recorded_at": "2026-04-26T05:40:02.118000Z",
     "reported": False, "code_text": None},
    {"vaccine": "OPV", "dose_number": 1, "date_given": "2026-04-25", "facility": {"code": "F-LAH-02", "name": "BHU Example Town"},
     "status": "completed", "voided": False, "superseded": False, "recorded_at": "2026-04-26T05:44:19.907000Z",
     "reported": False, "code_text": None},
]


class CitizenDose(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_DOSES[0]]})

    vaccine: str
    dose_number: int
    date_given: date
    facility: Place
    status: str = Field(description="completed, entered-in-error (voided), superseded (corrected by a later entry) or "
                                    "not-done (a due dose that was not given; it does not count)")
    voided: bool
    superseded: bool
    recorded_at: datetime
    reported: bool = Field(False, description="given elsewhere or earlier and reported to NHR: `facility` recorded it, "
                                              "it did not give it")
    code_text: str | None = Field(None, description="the vaccine as reported, when NHR does not know its code")


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


class CitizenCertificate(BaseModel):
    """The child's vaccination certificate (HC1, EU DCC / WHO DDCC:VS), issued for the guardian."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "uvci": "URN:UVCI:01:PK:NHR-PK-PB/7Q2M9X4KD1#H", "hc1": "HC1:6BFOXN%TSMAHN-H3O4...",
        "disease": "polio", "disease_display": "Acute poliomyelitis",
        "issued_at": "2026-11-22T05:14:00Z", "expires_at": "2027-11-22T05:14:00Z"}]})

    uvci: str
    hc1: str
    disease: str
    disease_display: str
    issued_at: datetime
    expires_at: datetime
