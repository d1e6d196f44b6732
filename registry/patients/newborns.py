"""Children registered before naming (DESIGN 8: "Baby of <mother>").

A child is often registered on the day of birth, before it has a name, so that its birth doses
(BCG, OPV-0, HepB-0) are recorded at once. Such a record is data, not a magic string:

- `patients.unnamed` is true, `given_name_ct` is NULL, and the guardian is the mother (her name
  required, relationship `mother`; her CNIC when she has one). The display name "Baby of <mother's
  name>" is derived on output (schemas.display_name), never stored, so naming the child leaves no
  placeholder behind in the encrypted columns.
- The child is named by an ordinary update (PATCH with If-Match, audited `patient.update` with
  `named: true` in the event's detail); the flag is then cleared for good.
- Certificates and the citizen view refuse an unnamed child (409, field `given_name`), and record
  linkage reads `PatientView.unnamed` to treat the record as unnamed.
"""

from __future__ import annotations

from registry.errors import InvalidInput
from registry.facilities import repository as facilities

MOTHER = "mother"


def registration_refusal(data: dict, session) -> InvalidInput | None:
    """The first rule a registration breaks, or None. `data` is PatientCreate.model_dump() (the
    schema already requires given_name unless `unnamed`, and refuses it when `unnamed`)."""
    if data.get("unnamed"):
        refused = guardian_refusal(data.get("guardian"))
        if refused is not None:
            return refused
    return facility_refusal(data.get("birth_facility"), session)


def guardian_refusal(guardian: dict | None) -> InvalidInput | None:
    """An unnamed child is known by its mother: her name is required and she is the guardian."""
    guardian = guardian or {}
    if not guardian.get("name"):
        return InvalidInput("the mother's name is required for a child registered before naming", field="guardian.name")
    if guardian.get("relationship") != MOTHER:
        return InvalidInput("must be mother for a child registered before naming (\"Baby of <mother>\")",
                            field="guardian.relationship")
    return None


def facility_refusal(code: str | None, session) -> InvalidInput | None:
    if code is not None and facilities.get(session, code) is None:
        return InvalidInput("must be the code of a registered facility", field="birth_facility")
    return None


def update_refusal(row, data: dict, session) -> InvalidInput | None:
    """An update of a patient row: a name cannot be removed; while the child is unnamed and not
    being named, a new guardian must still be the mother."""
    if "given_name" in data and data["given_name"] is None:
        return InvalidInput("given_name cannot be removed", field="given_name")
    if row.unnamed and not data.get("given_name") and "guardian" in data:
        refused = guardian_refusal(data["guardian"])
        if refused is not None:
            return refused
    return facility_refusal(data.get("birth_facility"), session)
