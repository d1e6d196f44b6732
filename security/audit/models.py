"""Audit event tables.

Invariants:
- One row per request that touches patient data (or an account), refused or not; rows are only
  ever inserted. Tamper evidence (append-only triggers, Merkle sealing) builds on this table:
  every column needed to rebuild an event's canonical form is here, nothing is derived later.
- No clinical data and no direct identifier of a patient is stored here: patients appear by
  their opaque row id; `detail` holds only non-identifying facts (counts, identifier *system*,
  field names changed), never values.
- `patient_province`/`patient_district` are copied from the patient at access time so auditors
  can be scoped to their jurisdiction without joining clinical tables.
- A request touching several patients (a list, a search) writes one event and one
  `audit_event_subjects` row per patient, so "who saw this child" also finds list views.
- All four tables are append-only: migration 0002 installs triggers that refuse UPDATE and
  DELETE. `audit_log_leaves` gives each sealed event its Merkle position (consecutive from 0,
  one leaf per event); `audit_checkpoints` holds the signed tree heads (see security/audit/sealer.py).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from security.orm import Base, UTCDateTime


class AuditEventRow(Base):
    __tablename__ = "audit_events"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    request_id: Mapped[str] = mapped_column(String(64))
    client_address: Mapped[str | None] = mapped_column(String(64))
    actor_user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    actor_username: Mapped[str | None] = mapped_column(String(64))
    actor_role: Mapped[str | None] = mapped_column(String(32))
    actor_scope_level: Mapped[str | None] = mapped_column(String(16))
    actor_scope_code: Mapped[str | None] = mapped_column(String(32))
    actor_province: Mapped[str | None] = mapped_column(String(32))
    actor_district: Mapped[str | None] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(48), index=True)
    resource_type: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[str | None] = mapped_column(String(64))
    patient_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    patient_province: Mapped[str | None] = mapped_column(String(32))
    patient_district: Mapped[str | None] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(16))
    purpose_of_use: Mapped[str | None] = mapped_column(String(16))
    break_glass: Mapped[bool] = mapped_column(Boolean, default=False)
    break_glass_reason: Mapped[str | None] = mapped_column(String(500))
    outside_capture_scope: Mapped[bool] = mapped_column(Boolean, default=False)
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
    # HMAC of the event's canonical bytes with the keyring's `audit-events` secret, written with the
    # event (security/audit/event_mac.py); not part of the leaf (it is computed over the leaf).
    mac: Mapped[bytes | None] = mapped_column(LargeBinary)

    __table_args__ = (
        Index(None, "patient_province", "patient_district", "occurred_at"),
        Index(None, "actor_province", "occurred_at"),
    )


class AuditEventSubjectRow(Base):
    __tablename__ = "audit_event_subjects"

    event_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("audit_events.id"), primary_key=True)
    patient_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, index=True)


class AuditLogLeafRow(Base):
    """An event's place in the Merkle tree: written once by the sealer, never changed."""

    __tablename__ = "audit_log_leaves"

    position: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    event_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("audit_events.id"), unique=True)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary)
    # Why the sealer did not vouch for this event (None: vouched for); see sealer.QUARANTINE_REASONS.
    # Bound into the leaf hash (leaf.quarantined_leaf_hash), so it cannot be added or removed later.
    quarantine: Mapped[str | None] = mapped_column(String(16))


class AuditCheckpointRow(Base):
    """A signed tree head. `compact_range` is the sealer's state (the complete-subtree roots of
    the tree at `tree_size`) so that the next seal need not re-read every leaf; verification
    never trusts it, it recomputes every root from the events."""

    __tablename__ = "audit_checkpoints"

    tree_size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary)
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    key_id: Mapped[str] = mapped_column(String(64))
    signature: Mapped[bytes] = mapped_column(LargeBinary)
    compact_range: Mapped[bytes] = mapped_column(LargeBinary)


class AuditCosignatureRow(Base):
    """A witness's C2SP cosignature (cosignature/v1) of the checkpoint at `tree_size`: stored only
    after it verified under a configured witness key (registry/audit_log/transparency.py).
    `signature` is what follows the key hash in the note signature line: 8-byte timestamp ||
    Ed25519 signature. Append-only (migration 0029)."""

    __tablename__ = "audit_cosignatures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tree_size: Mapped[int] = mapped_column(ForeignKey("audit_checkpoints.tree_size"), index=True)
    witness_name: Mapped[str] = mapped_column(String(200))
    key_id: Mapped[str] = mapped_column(String(8))
    signature: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (UniqueConstraint("tree_size", "witness_name", "key_id"),)


class AuditKeyHandoverRow(Base):
    """A hand-over of the checkpoint-signing key: a signed note (security/audit/handover.py) by the
    old key naming the new key, countersigned by the new key; checkpoints larger than `tree_size`
    are signed by the new key. `sequence` counts hand-overs from 1. Append-only (migration 0029)."""

    __tablename__ = "audit_key_handovers"

    sequence: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    tree_size: Mapped[int] = mapped_column(BigInteger)
    old_key_id: Mapped[str] = mapped_column(String(8))
    new_key_id: Mapped[str] = mapped_column(String(8))
    statement: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
