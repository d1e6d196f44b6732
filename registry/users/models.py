"""Staff accounts. Each user has one role bound to one scope (facility, district, province, national).

`token_generation` is the generation of access tokens the account accepts: every token carries the
generation it was issued under (`tgen`), and incrementing it (logout, deactivation, password reset,
"end all sessions") revokes every token issued before (registry/users/revocation.py)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from security.orm import Base, UTCDateTime


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(120))
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(32))
    scope_level: Mapped[str] = mapped_column(String(16))
    scope_code: Mapped[str] = mapped_column(String(32))
    facility_code: Mapped[str | None] = mapped_column(ForeignKey("facilities.code"))
    province: Mapped[str | None] = mapped_column(String(32))
    district: Mapped[str | None] = mapped_column(String(32))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    token_generation: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
