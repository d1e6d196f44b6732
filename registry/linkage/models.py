"""Candidate pairs of records that may be the same child, and the decisions taken on them.

Invariants (DESIGN 8, "linkage runs in custody"):
- A candidate row holds record ids, scores, the comparison levels per field (small integers,
  e.g. {"given_name": 3, "birth_date": 2}) and the decision: never a name, an identifier or any
  other value compared. Matching decrypts in memory inside the custodian's process; nothing
  decrypted is stored here.
- A pair is stored once, ordered: `left_id < right_id` (by the UUIDs' string form), so the same
  two records can never have two open candidates.
- `version` is the optimistic-concurrency counter of the decision: two stewards deciding the same
  pair at once: one wins, the other gets a conflict; nothing half-applied.
- `not_same` is remembered: the pair is never proposed again (re-running matching leaves it be).
- The steward's optional decision note may name people, so it is stored only as ciphertext
  (`note_ct`, bound to this table, column and candidate id) under the keys of `note_custodian`,
  the deciding steward's province; it is never logged or put in an audit event.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, LargeBinary, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from security.orm import Base, UTCDateTime

GRADES = ("certain", "probable", "possible")  # FHIR match-grade (certainly-not is never stored as a candidate)
SOURCES = ("registration", "dedupe", "cross_province", "match")
STATUSES = ("open", "merged", "not_same", "unsure")


class LinkCandidate(Base):
    __tablename__ = "link_candidates"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    left_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id"), index=True)
    right_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id"), index=True)
    match_weight: Mapped[float] = mapped_column(Float)  # Fellegi-Sunter log2 Bayes factor, summed over fields
    match_probability: Mapped[float] = mapped_column(Float)
    grade: Mapped[str] = mapped_column(String(16))
    levels: Mapped[dict] = mapped_column(JSON)  # field -> comparison level (integers only)
    model_version: Mapped[str] = mapped_column(String(40))
    source: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="open")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    note_ct: Mapped[bytes | None] = mapped_column(LargeBinary)  # the latest decision's note, encrypted
    note_custodian: Mapped[str | None] = mapped_column(String(32))

    __table_args__ = (UniqueConstraint("left_id", "right_id"), Index(None, "status", "grade"))
