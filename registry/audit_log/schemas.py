"""Audit event query and output shapes. Events hold no clinical data and no names of patients."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel


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
    items: list[AuditEventView]
    next_cursor: str | None
