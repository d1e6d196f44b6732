"""What one row of an import becomes: a `Parsed` record or a `RowInvalid` (field and reason
code only), and the ids derived for rows without one. Shared by the readers
(registry/bulk/sources.py) and the FHIR mapping of bulk files (registry/bulk/fhir_io.py), so
that neither imports the other's module back."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from pydantic import ValidationError

_NS = uuid.UUID("6f1c52e4-5a0e-4b7e-9a55-0d3c1e3b5a10")


class RowInvalid(Exception):
    def __init__(self, errors: list[tuple[str, str]]):
        super().__init__(errors)
        self.errors = errors  # [(field, reason code)]


@dataclass(slots=True)
class Parsed:
    kind: str                      # "patient" | "dose"
    id: uuid.UUID
    data: object                   # PatientCreate | DoseCreate
    patient_id: uuid.UUID | None = None  # doses: the patient referenced


def derived_id(sha: str, row: int) -> uuid.UUID:
    return uuid.uuid5(_NS, f"{sha}:{row}")


def pydantic_errors(exc: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    """Field and error type only: pydantic's `input` (the submitted value) is never kept."""
    return [(prefix + ".".join(str(p) for p in e["loc"]) or "row", e["type"][:48]) for e in exc.errors()]
