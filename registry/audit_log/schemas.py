"""Audit event query and output shapes. Events hold no clinical data and no names of patients."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict


# OpenAPI examples (synthetic): an emergency (break-glass) read by a district official from outside
# the patient's capture scope, and a clinic worker's search.
EXAMPLE_BREAK_GLASS_READ = {
    "id": "3f1d8c2a-7b4e-4c19-9a0d-5e6f7a8b9c01", "occurred_at": "2026-11-20T22:41:07.512000Z",
    "request_id": "9c5b2e7d4a1f4e0b8d3c6a2f1e0d9b8a", "client_address": "10.20.3.14",
    "actor_user_id": "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d", "actor_username": "official.lahore",
    "actor_role": "health_official", "actor_scope_level": "district", "actor_scope_code": "PK-PB-LAH",
    "action": "patient.read", "resource_type": "Patient", "resource_id": "6f1c2b1e-9a51-4c55-9d0e-2f3a4b5c6d7e",
    "patient_id": "6f1c2b1e-9a51-4c55-9d0e-2f3a4b5c6d7e", "patient_province": "PK-SD", "patient_district": "PK-SD-KRC",
    "outcome": "success", "purpose_of_use": "ETREAT", "break_glass": True,
    "break_glass_reason": "Child admitted unconscious at the emergency ward; vaccination history needed.",
    "outside_capture_scope": True, "detail": {}}
EXAMPLE_SEARCH = {
    "id": "7d2e9f40-1c3b-4a5d-8e6f-9a0b1c2d3e4f", "occurred_at": "2026-11-21T04:05:12.004000Z",
    "request_id": "e4a7c1d09b2f4c6a8e1d3b5f7a9c0e2d", "client_address": "10.20.7.31",
    "actor_user_id": "5e4d3c2b-1a09-4f8e-9d7c-6b5a4f3e2d1c", "actor_username": "clinic.lah02",
    "actor_role": "clinic_worker", "actor_scope_level": "facility", "actor_scope_code": "F-LAH-02",
    "action": "patient.search", "resource_type": "Patient", "resource_id": None, "patient_id": None,
    "patient_province": None, "patient_district": None, "outcome": "success", "purpose_of_use": "TREAT",
    "break_glass": False, "break_glass_reason": None, "outside_capture_scope": False,
    "detail": {"identifier_system": "nhr", "matches": 1, "outside_search_scope": 0}}


class AuditEventView(BaseModel):
    id: uuid.UUID
    occurred_at: datetime
    request_id: str
    client_address: str | None
    actor_user_id: uuid.UUID | None
    actor_username: str | None
    actor_role: str | None
    actor_scope_level: str | None
    actor_scope_code: str | None
    action: str
    resource_type: str
    resource_id: str | None
    patient_id: uuid.UUID | None
    patient_province: str | None
    patient_district: str | None
    outcome: str
    purpose_of_use: str | None
    break_glass: bool
    break_glass_reason: str | None
    outside_capture_scope: bool
    detail: dict


class AuditEventPage(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"items": [EXAMPLE_SEARCH, EXAMPLE_BREAK_GLASS_READ], "next_cursor": (
            "WyIyMDI2LTExLTIwVDIyOjQxOjA3LjUxMjAwMCswMDowMCIsICIzZjFkOGMyYS03YjRlLTRjMTktOWEwZC01ZTZmN2E4YjljMDEiXQ")}]})

    items: list[AuditEventView]
    next_cursor: str | None
