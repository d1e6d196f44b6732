"""Patients and their identifiers.

Invariants (DESIGN 1-3):
- Direct identifiers (names, guardian's name, phone, address below district, every identifier
  value) are stored only as AES-256-GCM ciphertext bound to table, column, row id, custodian and
  key version (`security/crypto/fields.py`). Columns ending in `_ct` hold ciphertext only.
- Quasi-identifiers needed by programme analytics stay in clear, behind access control: sex,
  birth date, residence province and district, home facility.
- `custodian` is the province where the patient was registered; its keys encrypt the row and
  it never changes, even when the family moves.
- `unnamed` is true for a child registered before naming (DESIGN 8: "Baby of <mother>"): it has
  no given name, the guardian is its mother, and its display name is derived, never stored.
  Naming it (an audited update with If-Match) clears the flag; a named child never goes back.
- Identifier values (on the patient row, encrypted) are found through the blind index table (blind index, 26 bits) and always confirmed by
  decrypting the candidate.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import Boolean, Date, ForeignKey, Index, Integer, LargeBinary, String, Uuid, false
from sqlalchemy.orm import Mapped, mapped_column

from security.orm import Base, UTCDateTime

SEXES = ("female", "male", "other", "unknown")
GUARDIAN_RELATIONSHIPS = ("mother", "father", "grandparent", "sibling", "other")


class Patient(Base):
    __tablename__ = "patients"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    custodian: Mapped[str] = mapped_column(String(32))
    province: Mapped[str] = mapped_column(String(32))
    district: Mapped[str] = mapped_column(String(32))
    home_facility: Mapped[str] = mapped_column(ForeignKey("facilities.code"))
    sex: Mapped[str] = mapped_column(String(8))
    birth_date: Mapped[date] = mapped_column(Date)
    # NULL only while `unnamed` (a newborn registered as "Baby of <mother>", named later)
    given_name_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    unnamed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    birth_facility: Mapped[str | None] = mapped_column(ForeignKey("facilities.code"))
    family_name_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    guardian_name_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    guardian_relationship: Mapped[str | None] = mapped_column(String(16))
    phone_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    address_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    health_id_ct: Mapped[bytes] = mapped_column(LargeBinary)
    bform_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    cnic_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    guardian_cnic_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[uuid.UUID] = mapped_column(Uuid)
    # Record linkage (issue 13): set when a data steward merged this record into another (the
    # survivor). The row is never deleted; its id resolves to the survivor; an unmerge clears it.
    merged_into: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("patients.id"), index=True)

    __table_args__ = (
        Index(None, "home_facility", "created_at", "id"),
        Index(None, "district", "created_at", "id"),
        Index(None, "province", "created_at", "id"),
        Index(None, "created_at", "id"),
    )


class PatientIdentifierIndex(Base):
    """Blind index of one identifier of one patient. The value itself is only on the patient
    row, encrypted; this table holds nothing but a 26-bit keyed hash per (patient, identifier)."""

    __tablename__ = "patient_identifier_index"

    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id"), primary_key=True)
    column: Mapped[str] = mapped_column(String(24), primary_key=True)  # health_id | bform | cnic | guardian_cnic
    system: Mapped[str] = mapped_column(String(16))
    custodian: Mapped[str] = mapped_column(String(32))
    bidx: Mapped[int] = mapped_column(Integer)

    __table_args__ = (Index(None, "system", "bidx"),)
