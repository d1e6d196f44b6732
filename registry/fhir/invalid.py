"""The error of an invalid FHIR resource and messages that never echo the input (shared by
registry/fhir/mapping.py and registry/fhir/immunization_map.py)."""

from __future__ import annotations

from registry.errors import InvalidInput

# pydantic error type -> a message that never echoes the input
_MESSAGES = {"missing": "is required", "extra_forbidden": "is not an element of this resource",
             "string_type": "must be a string", "int_type": "must be an integer", "bool_type": "must be a boolean",
             "list_type": "must be an array", "dict_type": "must be an object", "model_type": "must be an object",
             "date_from_datetime_parsing": "must be a date", "date_type": "must be a date"}

class FhirInvalid(InvalidInput):
    """An invalid FHIR resource. `expression` is FHIRPath-like, e.g. `Patient.name[0].given`.

    A domain `InvalidInput` (audited as `invalid`); `status` is 400 for a resource that is not
    valid FHIR (validate) and 422 for valid FHIR that NHR cannot accept (the mappings)."""

    def __init__(self, expression: str, message: str, *, status: int = 422) -> None:
        super().__init__(message, field=expression)
        self.expression = expression
        self.status = status


def _path(resource_type: str, loc: tuple) -> str:
    out = resource_type
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _message(err: dict) -> str:
    kind = err.get("type", "")
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    if kind.startswith("literal") or kind.startswith("enum"):
        return "is not one of the allowed codes"
    return "is not a valid value for its FHIR datatype"
