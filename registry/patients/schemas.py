"""Patient input and output shapes. Validators explain the rule, never echo the value."""

from __future__ import annotations

import re
import uuid
from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from registry import identifiers
from registry.clock import local_today
from registry.patients.models import GUARDIAN_RELATIONSHIPS, SEXES
from registry.text import Line

_PHONE = re.compile(r"^(\+92|0092|0)3\d{2}-?\d{7}$")
_Text = Field(min_length=1, max_length=100)
# The format rules below, stated in the schema too (what clients and schema-driven tools see)
_NADRA_SCHEMA = {"pattern": r"^[0-9]{5}-?[0-9]{7}-?[0-9]$"}
_PHONE_SCHEMA = {"pattern": r"^(\+92|0092|0)3[0-9]{2}-?[0-9]{7}$"}
_BIRTH_DATE = "not in the future, and at most 120 years ago (a rule of today's date, which a schema cannot state)"


def _nadra(v: str | None) -> str | None:
    if v is None:
        return None
    return identifiers.format_nadra(identifiers.normalise(identifiers.CNIC_SYSTEM, v))


def _phone(v: str | None) -> str | None:
    if v is None:
        return None
    compact = v.replace(" ", "")
    if not _PHONE.match(compact):
        raise ValueError("must be a Pakistani mobile number such as 0300-1234567 or +923001234567")
    digits = re.sub(r"\D", "", compact)
    return "+92" + digits[-10:]


def _birth_date(v: date) -> date:
    if v > local_today():
        raise ValueError("birth date cannot be in the future")
    if v.year < local_today().year - 120:
        raise ValueError("birth date is more than 120 years ago")
    return v


class Guardian(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Line | None = Field(None, min_length=1, max_length=100)
    relationship: str | None = Field(None, description=f"one of {', '.join(GUARDIAN_RELATIONSHIPS)}",
                                     json_schema_extra={"enum": [*GUARDIAN_RELATIONSHIPS, None]})  # null: not recorded
    cnic: str | None = Field(None, description="guardian's CNIC, XXXXX-XXXXXXX-X", examples=["35202-1234567-1"],
                             json_schema_extra=_NADRA_SCHEMA)

    _cnic = field_validator("cnic")(_nadra)

    @field_validator("relationship")
    @classmethod
    def _relationship(cls, v: str | None) -> str | None:
        if v is not None and v not in GUARDIAN_RELATIONSHIPS:
            raise ValueError(f"must be one of {', '.join(GUARDIAN_RELATIONSHIPS)}")
        return v


# The cross-field rules of registration (`PatientCreate._given`, patients/newborns.py), stated in the schema
# so that clients and the contract test see them: a given name unless the child is registered `unnamed`,
# and then none, with the mother as guardian (her name required).
_CREATE_RULES = [
    {"if": {"required": ["unnamed"], "properties": {"unnamed": {"const": True}}},
     "then": {"required": ["guardian"], "properties": {
         "given_name": {"type": "null"},
         "guardian": {"type": "object", "required": ["name", "relationship"],
                      "properties": {"name": {"type": "string", "minLength": 1}, "relationship": {"const": "mother"}}}}},
     "else": {"required": ["given_name"], "properties": {"given_name": {"type": "string"}}}},
]


class PatientCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"allOf": _CREATE_RULES, "examples": [{
        "given_name": "Ayesha", "family_name": "Khan", "sex": "female", "birth_date": "2026-09-01",
        "bform": "35202-7654321-2", "guardian": {"name": "Sana Khan", "relationship": "mother", "cnic": "35202-1234567-1"},
        "phone": "0300-1234567", "address": "House 12, Street 4, Shadman",
    }]})

    id: uuid.UUID | None = Field(None, description="client-generated UUID, for records created offline")
    # declared before given_name, whose validator reads it
    unnamed: bool = Field(False, description="a newborn not yet named: no given_name; the guardian is the mother "
                                             "(name required, relationship `mother`); shown as \"Baby of <mother>\" "
                                             "until named by an update")
    given_name: Line | None = Field(None, min_length=1, max_length=100, validate_default=True,
                                    description="required, unless the child is registered `unnamed`")
    family_name: Line | None = Field(None, min_length=1, max_length=100)
    sex: str = Field(description=f"one of {', '.join(SEXES)}", json_schema_extra={"enum": list(SEXES)})
    birth_date: date = Field(description=_BIRTH_DATE)
    bform: str | None = Field(None, description="child's B-form number, XXXXX-XXXXXXX-X", json_schema_extra=_NADRA_SCHEMA)
    cnic: str | None = Field(None, description="the patient's own CNIC (adults), XXXXX-XXXXXXX-X",
                             json_schema_extra=_NADRA_SCHEMA)
    guardian: Guardian | None = None
    phone: str | None = Field(None, json_schema_extra=_PHONE_SCHEMA)
    address: Line | None = Field(None, max_length=300, description="address below district level (encrypted)")
    district: str | None = Field(None, description="district of residence; defaults to the facility's district")
    birth_facility: str | None = Field(None, max_length=32, description="facility code where the child was born")
    confirm_not_duplicate: bool = Field(False, description="register even though the registry answered 409 "
                                        "`likely_duplicate` for this child (the confirmation is audited)")

    _ids = field_validator("bform", "cnic")(_nadra)
    _ph = field_validator("phone")(_phone)
    _bd = field_validator("birth_date")(_birth_date)

    @field_validator("given_name")
    @classmethod
    def _given(cls, v: str | None, info: ValidationInfo) -> str | None:
        unnamed = info.data.get("unnamed", False)
        if v is None and not unnamed:
            raise ValueError("required, unless the child is registered before naming (unnamed: true, with the mother "
                             "as guardian)")
        if v is not None and unnamed:
            raise ValueError("a child registered as unnamed has no given name: leave it out, or register it named")
        return v

    @field_validator("sex")
    @classmethod
    def _sex(cls, v: str) -> str:
        if v not in SEXES:
            raise ValueError(f"must be one of {', '.join(SEXES)}")
        return v


class PatientUpdate(BaseModel):
    """Partial update: only the fields present are changed; `null` clears an optional field."""

    model_config = ConfigDict(extra="forbid")
    given_name: Line | None = Field(None, min_length=1, max_length=100)
    family_name: Line | None = Field(None, min_length=1, max_length=100)
    sex: str | None = Field(None, json_schema_extra={"enum": list(SEXES)})
    birth_date: date | None = Field(None, description=_BIRTH_DATE)
    bform: str | None = Field(None, json_schema_extra=_NADRA_SCHEMA)
    cnic: str | None = Field(None, json_schema_extra=_NADRA_SCHEMA)
    guardian: Guardian | None = None
    phone: str | None = Field(None, json_schema_extra=_PHONE_SCHEMA)
    address: Line | None = Field(None, max_length=300)
    district: str | None = None
    birth_facility: str | None = Field(None, max_length=32)

    _ids = field_validator("bform", "cnic")(_nadra)
    _ph = field_validator("phone")(_phone)

    @field_validator("birth_date")
    @classmethod
    def _bd(cls, v: date | None) -> date | None:
        return None if v is None else _birth_date(v)

    @field_validator("sex")
    @classmethod
    def _sex(cls, v: str | None) -> str | None:
        if v is not None and v not in SEXES:
            raise ValueError(f"must be one of {', '.join(SEXES)}")
        return v


class PatientView(BaseModel):
    id: uuid.UUID
    health_id: str
    given_name: str | None = Field(description="null only while `unnamed`")
    family_name: str | None
    unnamed: bool = Field(False, description="registered before naming; certificates and the citizen view wait for the name")
    display_name: str = Field("", description="given and family name, or \"Baby of <mother's name>\" while unnamed")
    birth_facility: str | None = None
    sex: str
    birth_date: date
    bform: str | None
    cnic: str | None
    guardian: Guardian | None
    phone: str | None
    address: str | None
    province: str
    district: str
    home_facility: str
    custodian: str
    version: int
    created_at: datetime
    updated_at: datetime
    merged_into: uuid.UUID | None = Field(None, description="set when a data steward merged this record into another: "
                                                            "the surviving record (GET answers 301 to it)")


class PatientRegistered(PatientView):
    """The registration response: the record plus the patient's access code for the citizen view.
    The code is shown here once, to be printed on the vaccination card; the registry keeps only
    its hash, so no later read returns it (a lost code is replaced: POST /patients/{id}/access-code)."""

    access_code: str = Field(description="shown once: print it on the vaccination card", examples=["K7Q4-M9PX-2RC"])


class PatientPage(BaseModel):
    items: list[PatientView]
    next_cursor: str | None


class PatientMatch(BaseModel):
    """A search result. `access` says how far the caller reaches this patient:

    - `capture`: the full record, as `GET /patients/{id}` would return it;
    - `search`: found by an exact identifier outside the caller's capture scope. Only what
      confirms the child in front of you is returned (names, birth date, sex, guardian's name,
      health ID, home facility); contact details and national ID numbers are withheld (data
      minimisation). Doses can still be listed and recorded for such a child."""

    access: str
    id: uuid.UUID
    health_id: str
    given_name: str | None = None  # nullable fields default to None: the search answers without its nulls
    family_name: str | None = None
    unnamed: bool = False
    display_name: str = ""
    sex: str
    birth_date: date
    guardian: Guardian | None = None
    province: str
    district: str
    home_facility: str
    bform: str | None = None
    cnic: str | None = None
    phone: str | None = None
    address: str | None = None
    held_by: str | None = Field(None, description="provincial nodes only: the province whose node holds this record "
                                "(found by asking that node; identity confirmation only)")
    custodian: str | None = None
    version: int | None = None


def display_name(given: str | None, family: str | None, guardian_name: str | None, unnamed: bool) -> str:
    """Derived, never stored: "Baby of <mother>" for a child not yet named (DESIGN 8)."""
    if unnamed:
        return f"Baby of {guardian_name}" if guardian_name else "Baby (not yet named)"
    return " ".join(p for p in (given, family) if p)
