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

from sqlalchemy import BigInteger, ForeignKey, Integer, LargeBinary, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from security.orm import Base, UTCDateTime


class PatientAccessCode(Base):
    __tablename__ = "patient_access_codes"

    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id"), primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(255))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    issued_by_user_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    generation: Mapped[int] = mapped_column(Integer, default=1)


class AccessCodePoolRow(Base):
    """A ready access code (issue 17): made by `nhr worker` (registry/citizens/code_pool.py) so that
    registration takes one instead of hashing one. The code is kept only sealed (AES-256-GCM under
    the keyring's `access-code-pool` secret, its hash bound as associated data) beside its
    argon2id hash; a registration deletes the row it takes in its own transaction."""

    __tablename__ = "access_code_pool"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    code_hash: Mapped[str] = mapped_column(String(255))
    code_ct: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
