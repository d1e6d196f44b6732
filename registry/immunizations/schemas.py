"""Dose input and output shapes."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from registry.immunizations import not_done
from registry.immunizations.vaccines import VACCINES
from registry.text import Text
from registry.immunizations.vocabulary import load as _vocabulary

REPORT_ORIGINS = ("home_record", "facility_register", "other_system", "abroad", "recall")
_FREE = r"^[^\x00-\x1f]*$"


def _vaccine(v: str | None) -> str | None:
    if v is None:
        return None
    v = v.strip().upper()
    if v not in VACCINES and v not in _vocabulary().groups:
        raise ValueError(f"must be one of {', '.join(VACCINES)} or a group of the vocabulary (INFLUENZA, HPV, ...)")
    return v


def _not_done_reason(v: str | None, info: ValidationInfo) -> str | None:
    """Required (a code of the value set) for status `not-done`, absent otherwise."""
    if info.data.get("status", "completed") != not_done.STATUS:
        if v is not None:
            raise ValueError("only for a dose recorded with status not-done")
        return None
    if v is None:
        raise ValueError(f"required when status is not-done: one of {', '.join(not_done.reasons())}")
    return not_done.check(v.strip().lower())


class VaccineCode(BaseModel):
    """A vaccine code as the sender wrote it (CVX, SNOMED CT, ATC, ICD-11, a Pakistan EPI name...)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"anyOf": [
        {"required": ["code"], "properties": {"code": {"type": "string"}}},
        {"required": ["text"], "properties": {"text": {"type": "string"}}}]})
    system: str | None = Field(None, min_length=1, max_length=200, pattern=r"^\S+$")
    code: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[^\x00-\x1f]+$")
    text: str | None = Field(None, min_length=1, max_length=200, pattern=_FREE,
                             description="the vaccine's name as written; required when the code is not one NHR knows")

    @model_validator(mode="after")
    def _some(self):
        if self.code is None and self.text is None:
            raise ValueError("give a code or a text")
        return self


_OVERRIDE = Field(None, min_length=10, max_length=500,
                  description="record the dose even though it breaks a validation rule (duplicate, or invalid by the "
                              "schedule), and say why; stored encrypted, and the override is audited")


_REPORTED_ONLY = ("report_origin", "performer_facility", "performer_text", "location_text", "country", "occurrence_text",
                  "source_recorded")
# The rules of `DoseCreate._consistent`, stated in the schema so that clients (and the contract test) see them.
_CREATE_RULES = [
    {"anyOf": [{"required": ["vaccine"], "properties": {"vaccine": {"type": "string"}}},
               {"required": ["code"], "properties": {"code": {"type": "object"}}}]},
    {"anyOf": [{"required": ["date_given"], "properties": {"date_given": {"type": "string"}}},
               {"required": ["occurrence_text"], "properties": {"occurrence_text": {"type": "string"}}}]},
    {"if": {"not": {"required": ["provenance"], "properties": {"provenance": {"const": "reported"}}}},
     "then": {"properties": {**{f: {"type": "null"} for f in _REPORTED_ONLY}, "primary_source": {"not": {"const": False}}}}},
    # `_not_done_reason` and not_done.judge: a reason (a code of the value set) iff status is not-done, and then
    # no lot number and no override (nothing was given, no rule was broken)
    {"if": {"required": ["status"], "properties": {"status": {"const": not_done.STATUS}}},
     "then": {"required": ["not_done_reason"], "properties": {
         "not_done_reason": {"type": "string", "enum": list(not_done.reasons())},
         "lot_number": {"type": "null"}, "override_reason": {"type": "null"}}},
     "else": {"properties": {"not_done_reason": {"type": "null"}}}},
]


def _vaccine_names() -> list[str]:
    return [*VACCINES, *sorted(_vocabulary().groups)]


class DoseCreate(BaseModel):
    """A dose *administered here* (the default: the caller gave it, at their facility) or
    *reported* (given elsewhere or earlier: home card, facility register, another system,
    abroad, recall). Reported doses are never refused for schedule rules, only for impossible
    facts; the caller is their recorder, never their performer."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"allOf": _CREATE_RULES, "examples": [
        {"vaccine": "PENTA", "dose_number": 1, "date_given": "2026-10-13", "lot_number": "PN2026-114"},
        {"provenance": "reported", "report_origin": "home_record", "code": {"system": "http://hl7.org/fhir/sid/cvx",
         "code": "146"}, "date_given": "2025-03-02", "country": "AE"}]})

    id: uuid.UUID | None = Field(None, description="client-generated UUID, for doses recorded offline")
    vaccine: str | None = Field(None, description=f"one of {', '.join(VACCINES)}, or a vocabulary group (INFLUENZA, "
                                                  "HPV, ...); or give `code` instead",
                                json_schema_extra={"enum": _vaccine_names()})
    code: VaccineCode | None = Field(None, description="the vaccine code as sent (CVX, SNOMED CT, ATC, ICD-11, EPI name)")
    dose_number: int | None = Field(None, ge=0, le=10, description="absent: inferred from the order of the series' "
                                                                  "valid doses, and marked as inferred")
    date_given: date | None = Field(None, description="required unless occurrence_text is given")
    occurrence_text: str | None = Field(None, min_length=1, max_length=100, pattern=_FREE,
                                        description="an approximate date (\"about 2019\"), reported doses only; "
                                                    "date_given is then estimated from it")
    lot_number: str | None = Field(None, min_length=1, max_length=40, pattern=r"^[A-Za-z0-9./ -]+$")
    override_reason: Text | None = _OVERRIDE
    status: Literal["completed", "not-done"] = Field(
        "completed", description="`not-done`: the due dose was NOT given (refusal, contraindication, stock-out, child "
                                 "absent...); it never counts as a dose. Give `not_done_reason`; no lot number")
    not_done_reason: str | None = Field(None, validate_default=True, description=(
        "for status not-done only, one of: " + ", ".join(not_done.reasons()) + " (see docs/field-work.md)"))
    provenance: Literal["administered", "reported"] = "administered"
    primary_source: bool | None = Field(None, description="FHIR primarySource; default: true when administered here")
    report_origin: Literal[REPORT_ORIGINS] | None = None  # type: ignore[valid-type]
    performer_facility: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    performer_text: str | None = Field(None, min_length=1, max_length=200, pattern=_FREE,
                                       description="who gave it, as reported (stored encrypted)")
    location_text: str | None = Field(None, min_length=1, max_length=200, pattern=_FREE,
                                      description="where it was given, as reported (stored encrypted)")
    country: str | None = Field(None, pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2, where it was given")
    source_recorded: str | None = Field(None, pattern=r"^\d{4}(-\d{2}(-\d{2}([T ][0-9:.]+(Z|[+-]\d{2}:\d{2})?)?)?)?$",
                                        description="when the source recorded it (FHIR `recorded`), as written")
    subpotent: bool = Field(False, description="given but not potent: recorded and shown, counted for nothing")
    # the provenance elements of a FHIR Immunization exactly as sent (set by registry/fhir/mapping.py)
    _fhir_source: dict | None = PrivateAttr(None)

    _v = field_validator("vaccine")(_vaccine)
    _ndr = field_validator("not_done_reason")(_not_done_reason)

    @model_validator(mode="after")
    def _consistent(self):
        if self.vaccine is None and self.code is None:
            raise ValueError("give vaccine or code")
        if self.date_given is None and self.occurrence_text is None:
            raise ValueError("give date_given (or, for a reported dose, occurrence_text)")
        if self.provenance == "administered":
            extra = [f for f in _REPORTED_ONLY if getattr(self, f) is not None]
            if extra or self.primary_source is False:
                raise ValueError(f"{(extra or ['primary_source'])[0]} is for reported doses (provenance: reported)")
        return self

    @property
    def administered_here(self) -> bool:
        return self.provenance == "administered"


class DoseCorrection(BaseModel):
    """The corrected values (only those that change) and why. The old record is kept, superseded."""

    model_config = ConfigDict(extra="forbid")
    vaccine: str | None = Field(None, json_schema_extra={"enum": _vaccine_names()})
    dose_number: int | None = Field(None, ge=0, le=10)
    date_given: date | None = None
    lot_number: str | None = Field(None, min_length=1, max_length=40, pattern=r"^[A-Za-z0-9./ -]+$")
    reason: Text = Field(min_length=3, max_length=500)
    override_reason: Text | None = _OVERRIDE

    _v = field_validator("vaccine")(_vaccine)


class DoseVoid(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Text = Field(min_length=3, max_length=500)


class DoseView(BaseModel):
    id: uuid.UUID
    patient_id: uuid.UUID
    vaccine: str = Field(description="what the dose counts for: an EPI vaccine, a vocabulary group outside the "
                                     "schedule, UNKNOWN (a code NHR does not know) or SUBPOTENT")
    dose_number: int
    date_given: date
    # nullable fields have a default, so that a view written without its nulls (exclude_none: the pair view, the
    # search) still matches the documented schema
    lot_number: str | None = None
    facility: str = Field(description="the recording facility (for a reported dose: the recorder, not where it was given)")
    performer_id: uuid.UUID | None = Field(None, description="who gave it, for a dose administered here; null for a "
                                                             "reported dose")
    status: str
    status_reason: str | None = None
    supersedes_id: uuid.UUID | None = None
    recorded_at: datetime
    version: int
    validity: str | None = Field(None, description="by the schedule in force today: valid, invalid or not_in_schedule "
                                                   "(null for a dose that is not completed, or with no schedule)")
    validity_reason: str | None = Field(None, description="why an invalid dose is invalid (a schedule rule code)")
    override_rule: str | None = Field(None, description="the rule this dose was recorded in spite of, with an override")
    override_reason: str | None = Field(None, description="the recorder's reason for the override")
    not_done_reason: str | None = Field(None, description="status not-done: why the dose was not given (a code)")
    provenance: str = Field("administered", description="administered (here, by the recorder) or reported")
    primary_source: bool = True
    recorder_id: uuid.UUID | None = Field(None, description="who recorded it in NHR")
    report_origin: str | None = None
    performer_facility: str | None = None
    performer_text: str | None = None
    location_text: str | None = None
    country: str | None = None
    occurrence_text: str | None = None
    source_recorded: str | None = None
    code: VaccineCode | None = None
    counts_for: list[str] = Field(default_factory=list, description="every EPI vaccine this dose counts for")
    dose_number_inferred: bool = Field(False, description="true: no dose number was given; NHR inferred it from the "
                                                          "order of the series' doses")
    # the provenance elements of the FHIR Immunization the dose came from, exactly as sent (FHIR output only)
    _fhir_source: dict | None = PrivateAttr(None)
