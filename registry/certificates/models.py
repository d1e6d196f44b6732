"""Issued vaccination certificates and their revocations (issue 6).

Invariants:
- A certificate is identified by its UVCI; the row holds no patient data beyond the patient's id
  (the signed payload itself is never stored: it is rebuilt from the record when reissued).
- A revocation is a separate, append-only row: a certificate is revoked once and stays revoked.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, LargeBinary, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from security.orm import Base, UTCDateTime

REVOCATION_REASONS = ("issued-in-error", "dose-amended", "superseded", "key-compromise", "fraud")


class IssuedCertificate(Base):
    __tablename__ = "issued_certificates"

    uvci: Mapped[str] = mapped_column(String(80), primary_key=True)
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id"), index=True)
    custodian: Mapped[str] = mapped_column(String(32))
    kid: Mapped[bytes] = mapped_column(LargeBinary(8))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    issued_by: Mapped[uuid.UUID] = mapped_column(Uuid)


class CertificateRevocation(Base):
    __tablename__ = "certificate_revocations"

    uvci: Mapped[str] = mapped_column(ForeignKey("issued_certificates.uvci"), primary_key=True)
    revoked_at: Mapped[datetime] = mapped_column(UTCDateTime)
    reason_code: Mapped[str] = mapped_column(String(32))
    revoked_by: Mapped[uuid.UUID] = mapped_column(Uuid)
