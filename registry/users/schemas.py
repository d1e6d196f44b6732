"""Staff account shapes. Passwords are accepted on the way in and never returned."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from registry.text import Line
from security.access.permissions import Role


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=3, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]+$")
    display_name: Line = Field(min_length=1, max_length=120)
    password: str = Field(min_length=1, max_length=128, json_schema_extra={"format": "password", "writeOnly": True})
    role: Role
    scope_code: str = Field(description="facility code for clinic workers; jurisdiction code (district, province or country) otherwise")


class UserView(BaseModel):
    id: uuid.UUID
    username: str
    display_name: str
    role: str
    scope_level: str
    scope_code: str
    active: bool
    created_at: datetime


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    role: str
    scope_level: str
    scope_code: str
