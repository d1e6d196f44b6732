"""Break-glass review findings: an auditor's verdict on one emergency access.

Invariants:
- One finding per event, and it is final: the table is append-only (migration 0003 installs
  triggers that refuse UPDATE and DELETE, like the audit tables), and the primary key is the
  event id, so a second finding for the same event is refused (409).
- The auditor's note may mention people (the child, the clinician), so it is stored only as
  AES-256-GCM ciphertext bound to this table, column and event id, under the keys of
  `note_custodian`: the province of the patient the access concerned (else the actor's
  province). The custodian is stored because the reviewer's own scope may change later.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, LargeBinary, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from security.orm import Base, UTCDateTime


class BreakGlassReviewRow(Base):
    __tablename__ = "break_glass_reviews"

    event_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("audit_events.id"), primary_key=True)
    finding: Mapped[str] = mapped_column(String(16))  # justified | not_justified
    note_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    note_custodian: Mapped[str | None] = mapped_column(String(32))
    reviewer_user_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    reviewed_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
