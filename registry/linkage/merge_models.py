"""Merges decided by a data steward (issue 13, DESIGN 8: "a merge never deletes").

A merge keeps both patient rows: the merged one points to its survivor (`patients.merged_into`),
every dose it owned moves to the survivor remembering its original owner
(`immunizations.original_patient_id`), and this row lists the moved doses with what their
`original_patient_id` was before the move, so that an unmerge restores every owner exactly.
No patient data: ids, times and the steward's user id only.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, Integer, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from security.orm import Base, UTCDateTime


class LinkMerge(Base):
    __tablename__ = "link_merges"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    candidate_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("link_candidates.id"))
    survivor_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id"), index=True)
    merged_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id"), index=True)
    # [[dose id, original_patient_id before the move or null], ...] (strings)
    moved_doses: Mapped[list] = mapped_column(JSON)
    merged_by: Mapped[uuid.UUID] = mapped_column(Uuid)
    merged_at: Mapped[datetime] = mapped_column(UTCDateTime)
    unmerged_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    unmerged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # dose ids recorded on the survivor after the merge that the unmerge moved to the restored record
    unmerge_moved: Mapped[list | None] = mapped_column(JSON)

    __table_args__ = (Index(None, "merged_at", "id"),)
