"""Examples for the OpenAPI document's request and response bodies, kept in one place (issue 18).

Each example is built by instantiating its model, so it cannot drift from the model: a renamed or
new required field fails at import (and `tests/test_openapi_document.py` checks each one lands
on its component). `api/openapi.py` attaches them to the components that carry no example yet.
The values are synthetic (no real person), the identifiers in the formats the registry checks.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timezone

from pydantic import BaseModel

from registry.aefi.schemas import AdverseEventPage, AdverseEventView
from registry.immunizations.schemas import DoseCorrection, DoseView, DoseVoid
from registry.patients.schemas import Guardian, PatientMatch, PatientPage, PatientRegistered, PatientUpdate, PatientView
from registry.sync.schemas import BatchResult, ItemResult
from registry.users.schemas import TokenResponse, UserCreate, UserView

_PID = uuid.UUID("0b9f1c4e-8d1a-4c1e-9a43-5f3b2a7c9e10")
_DOSE = uuid.UUID("6a1d0c55-3f0e-4f7b-8c8e-2b8f1d9e4a21")
_USER = uuid.UUID("d7c6b5a4-9382-4716-a5b4-c3d2e1f00a1b")
_AT = datetime(2026, 10, 13, 9, 30, 12, tzinfo=timezone.utc)
_GUARDIAN = Guardian(name="Sana Khan", relationship="mother", cnic="35202-1234567-1")

_PATIENT = PatientView(
    id=_PID, health_id="4821-0937-5516", given_name="Ayesha", family_name="Khan", sex="female",
    birth_date=date(2026, 9, 1), bform="35202-7654321-2", cnic=None, guardian=_GUARDIAN, phone="+923001234567",
    address="House 12, Street 4, Shadman", province="PK-PB", district="PK-PB-LAH", home_facility="PB-LAH-BHU-001",
    custodian="PK-PB", version=1, created_at=_AT, updated_at=_AT)
_DOSE_VIEW = DoseView(
    id=_DOSE, patient_id=_PID, vaccine="PENTA", dose_number=1, date_given=date(2026, 10, 13), lot_number="PN2026-114",
    facility="PB-LAH-BHU-001", performer_id=_USER, status="completed", status_reason=None, supersedes_id=None,
    recorded_at=_AT, version=1, validity="valid")
_AEFI = AdverseEventView(
    id=uuid.UUID("9c2e4b1a-7d3f-4e58-b6a0-1f2d3c4b5a69"), immunization_id=_DOSE, patient_id=_PID, vaccine="PENTA",
    lot_number="PN2026-114", facility="PB-LAH-BHU-001", onset_date=date(2026, 10, 14), symptoms=["fever"],
    seriousness="non_serious", serious=False, outcome="recovered", coding="nhr-aefi-2026.1",
    notes="settled after paracetamol", reported_by=_USER, reported_at=_AT)

EXAMPLES: list[BaseModel] = [
    _PATIENT,
    PatientRegistered(**_PATIENT.model_dump(), access_code="K7Q4-M9PX-2RC"),
    PatientPage(items=[_PATIENT], next_cursor="eyJrIjoiMjAyNi0xMC0xMyJ9"),
    PatientMatch(access="search", id=_PID, health_id="4821-0937-5516", given_name="Ayesha", family_name="Khan",
                 sex="female", birth_date=date(2026, 9, 1), guardian=Guardian(name="Sana Khan"), province="PK-PB",
                 district="PK-PB-LAH", home_facility="PB-LAH-BHU-001"),
    PatientUpdate(phone="0301-7654321", address="House 3, Street 9, Gulberg"),
    _DOSE_VIEW,
    DoseCorrection(date_given=date(2026, 10, 12), reason="date copied wrongly from the card"),
    DoseVoid(reason="entered twice"),
    _AEFI,
    AdverseEventPage(items=[_AEFI], next_cursor=None),
    BatchResult(results=[ItemResult(index=0, op="patient.create", id=_PID, result="created", version=1,
                                    health_id="4821-0937-5516", access_code="K7Q4-M9PX-2RC"),
                         ItemResult(index=1, op="dose.record", id=_DOSE, result="duplicate"),
                         ItemResult(index=2, op="dose.record", result="rejected", reason="invalid", field="data.vaccine",
                                    detail="must be one of BCG, OPV, ...")],
                created=1, duplicate=1, rejected=1),
    TokenResponse(access_token="eyJhbGciOiJIUzI1NiIsInR5cCI6ImF0K2p3dCJ9...", expires_in=900, role="clinic_worker",
                  scope_level="facility", scope_code="PB-LAH-BHU-001"),
    UserCreate(username="clinic.shadman", display_name="Vaccinator, BHU Shadman", password="long-passphrase-for-example",
               role="clinic_worker", scope_code="PB-LAH-BHU-001"),
    UserView(id=_USER, username="clinic.shadman", display_name="Vaccinator, BHU Shadman", role="clinic_worker",
             scope_level="facility", scope_code="PB-LAH-BHU-001", active=True, created_at=_AT),
]


def by_component() -> dict[str, dict]:
    """Component name -> its example, as JSON: the fields it was built with (nulls kept: a required nullable field
    is part of the shape), not the defaults of the others (a PATCH example sends only what changes)."""
    return {type(m).__name__: m.model_dump(mode="json", by_alias=True, exclude_unset=True) for m in EXAMPLES}
