"""Patient access codes: the secret printed on a vaccination card that lets a guardian log in
to the citizen view (issue 3).

Invariants:
- The code itself is never stored: only its argon2id hash (security/passwords.PasswordHasher).
  It is shown once, in the response that issued it.
- One row per patient; reissuing replaces the hash and increments `generation`, which citizen
  tokens carry, so a reissued code also ends every session opened with the old one.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from security.orm import Base, UTCDateTime


class PatientAccessCode(Base):
    __tablename__ = "patient_access_codes"

    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id"), primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(255))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    issued_by_user_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    generation: Mapped[int] = mapped_column(Integer, default=1)
