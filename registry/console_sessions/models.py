"""A console session. The browser holds a random token; the table holds only its SHA-256, so a
copy of the table cannot be replayed as cookies. A session belongs to a staff user, or to a
guardian logged in with a child's health ID and access code (`patient_id` and the code's
`citizen_generation`: reissuing the code ends it), never both."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from security.orm import Base, UTCDateTime


class ConsoleSession(Base):
    __tablename__ = "console_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # hex SHA-256 of the cookie's token
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("users.id"), nullable=True)
    patient_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("patients.id"), nullable=True)
    citizen_generation: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)  # the absolute lifetime's end
    csrf_secret: Mapped[str] = mapped_column(String(64))
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (Index(None, "user_id"), Index(None, "patient_id"),
                      CheckConstraint("(user_id IS NULL) <> (patient_id IS NULL)", name="one_subject"))
