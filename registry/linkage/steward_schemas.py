"""Shapes of the data steward's API: the queue, a pair side by side, decisions, merges."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from registry.immunizations.schemas import DoseView
from registry.patients.schemas import PatientMatch
from registry.text import Text

NOTE_MAX = 1000


class QueueItem(BaseModel):
    id: uuid.UUID
    version: int
    left_id: uuid.UUID
    right_id: uuid.UUID
    grade: str
    match_weight: float
    match_probability: float
    status: str
    source: str
    cross_province: bool
    reasons: list[str]
    created_at: datetime


class QueuePage(BaseModel):
    items: list[QueueItem]
    next_cursor: str | None


class PairRecord(BaseModel):
    """One side of the pair: the full record and its doses when it is in the steward's capture
    scope (`access: capture`), identity confirmation only otherwise (`access: search`)."""
    record: PatientMatch
    immunizations: list[DoseView] | None = None
    suggested_survivor: bool = False


class PairView(BaseModel):
    candidate: QueueItem
    left: PairRecord
    right: PairRecord
    note: str | None = Field(None, description="the note of the latest decision that had one (e.g. an `unsure` pair's), "
                                               "decrypted for the steward; stored encrypted")
    note_unreadable: bool = False


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"decision": "same", "survivor_id": "0b9f1c4e-8d1a-4c1e-9a43-5f3b2a7c9e10"}, {"decision": "not_same"},
        {"decision": "unsure", "note": "Ask the Shadman vaccinator whether the mother has twins."}]})
    decision: Literal["same", "not_same", "unsure"]
    survivor_id: uuid.UUID | None = Field(None, description="same: the record that survives (one of the pair); "
                                                            "default the one with more doses, then the older")
    note: Text | None = Field(None, max_length=NOTE_MAX, description="optional; stored encrypted under the steward's "
                                                                     "province's keys, never logged or audited")


class MergeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    survivor_id: uuid.UUID
    merged_id: uuid.UUID = Field(description="the record replaced by the survivor; it is kept and points to it")


class UnmergeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    move_dose_ids: list[uuid.UUID] = Field(default_factory=list, max_length=200,
                                           description="doses recorded on the survivor after the merge that belong to "
                                                       "the restored record (the others stay with the survivor)")
    candidate_status: Literal["not_same", "unsure"] = Field(
        "not_same", description="what the pair becomes, if the merge came from a candidate pair")


class MergeView(BaseModel):
    id: uuid.UUID
    version: int
    candidate_id: uuid.UUID | None = None  # a default: answers written without nulls still match the schema
    survivor_id: uuid.UUID
    merged_id: uuid.UUID
    moved_dose_ids: list[uuid.UUID]
    merged_by: uuid.UUID
    merged_at: datetime
    unmerged_by: uuid.UUID | None = None
    unmerged_at: datetime | None = None
    unmerge_moved_dose_ids: list[uuid.UUID] | None = None


class MergePage(BaseModel):
    items: list[MergeView]
    next_cursor: str | None


class DecisionResult(BaseModel):
    candidate_id: uuid.UUID
    status: str
    version: int
    merge: MergeView | None = None
