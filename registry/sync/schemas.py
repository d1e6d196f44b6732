"""Shapes of the batch upload and the changes feed.

Batch items are parsed one by one (`parse_item`), not by the request model: a malformed item is
that item's `rejected` result, never a 422 that loses the rest of the device's day.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from registry.immunizations.schemas import DoseCorrection, DoseCreate, DoseView, DoseVoid
from registry.patients.schemas import PatientCreate, PatientView


class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PatientItem(_Item):
    op: Literal["patient.create"]
    data: PatientCreate  # `data.id` (a client-generated UUID) is required in a batch


class DoseItem(_Item):
    op: Literal["dose.record"]
    patient_id: uuid.UUID  # may be a patient created earlier in the same batch
    data: DoseCreate  # `data.id` is required in a batch


class CorrectItem(_Item):
    op: Literal["dose.correct"]
    dose_id: uuid.UUID
    if_match: str | None = Field(None, max_length=64, description="the dose's ETag, e.g. \"1\"")
    data: DoseCorrection


class VoidItem(_Item):
    op: Literal["dose.void"]
    dose_id: uuid.UUID
    if_match: str | None = Field(None, max_length=64)
    data: DoseVoid


Item = Annotated[Union[PatientItem, DoseItem, CorrectItem, VoidItem], Field(discriminator="op")]
ITEM = TypeAdapter(Item)


class BatchUpload(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"items": [
        {"op": "patient.create", "data": {"id": "0b9f1c4e-8d1a-4c1e-9a43-5f3b2a7c9e10", "given_name": "Ayesha",
                                          "sex": "female", "birth_date": "2026-09-01"}},
        {"op": "dose.record", "patient_id": "0b9f1c4e-8d1a-4c1e-9a43-5f3b2a7c9e10",
         "data": {"id": "6a1d0c55-3f0e-4f7b-8c8e-2b8f1d9e4a21", "vaccine": "BCG", "dose_number": 1, "date_given": "2026-09-01"}},
    ]}]})
    items: list[dict[str, Any]] = Field(min_length=1, description="in order; each item gets its own result")


class ItemResult(BaseModel):
    index: int
    op: str | None = None  # None: the item named no known op (omitted from the answer)
    id: uuid.UUID | None = None  # the record the item is about (patient, dose)
    result: Literal["created", "duplicate", "rejected"]
    version: int | None = None
    replacement_id: uuid.UUID | None = None  # dose.correct: the new record
    health_id: str | None = None  # patient.create, created: shown this once, like the access code
    access_code: str | None = None
    reason: str | None = None  # rejected: invalid | not_found | forbidden | conflict | precondition_failed | ...
    code: str | None = None  # a finer reason code when the rule that refused the item has one
    field: str | None = None
    detail: str | None = None
    merged_into: uuid.UUID | None = None  # code `merged`: the surviving record, to resend the item for (issue 13)


class BatchResult(BaseModel):
    results: list[ItemResult]
    created: int
    duplicate: int
    rejected: int


class Change(BaseModel):
    type: Literal["patient", "immunization"]
    id: uuid.UUID
    version: int
    changed_at: datetime
    patient: PatientView | None = None
    immunizations: list[DoseView] | None = None  # with a patient: all its doses (a patient moving in brings them)
    immunization: DoseView | None = None
    # issue 13: a patient entry of a record a data steward merged into another names the survivor
    # (the device replaces its copy; the survivor's own entry carries the moved doses)
    replaced_by: uuid.UUID | None = None


class ChangesPage(BaseModel):
    items: list[Change]
    next_cursor: str
    has_more: bool
