"""OperationOutcome for errors on /fhir/R4, from the same domain errors and statuses as /api/v1.

Invariant: diagnostics are the domain error's message (which names fields and rules, never
patient data); `expression` is the element path, never a value.
"""

from __future__ import annotations

from registry import errors as e

# domain error -> (HTTP status, OperationOutcome issue code); same statuses as api/problems.py
STATUS: list[tuple[type, int, str]] = [
    (e.Unauthenticated, 401, "login"),
    (e.Forbidden, 403, "forbidden"),
    (e.NotFound, 404, "not-found"),
    (e.Conflict, 409, "duplicate"),
    (e.PreconditionFailed, 412, "conflict"),
    (e.InvalidInput, 422, "invalid"),
    (e.PreconditionRequired, 428, "required"),
    (e.TooManyAttempts, 429, "throttled"),
    (e.ServiceUnavailable, 503, "transient"),
]
REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 406: "Not Acceptable", 409: "Conflict", 412: "Precondition Failed",
           415: "Unsupported Media Type", 422: "Unprocessable Entity", 428: "Precondition Required",
           429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}
# registry field names (errors raised by the shared services) -> FHIR element paths
FIELD_PATHS = {
    "Patient": {"district": "Patient.address.district", "bform": "Patient.identifier", "cnic": "Patient.identifier",
                "given_name": "Patient.name.given", "family_name": "Patient.name.family", "id": "Patient.id",
                "phone": "Patient.telecom", "sex": "Patient.gender", "birth_date": "Patient.birthDate",
                "guardian.name": "Patient.contact.name", "guardian.relationship": "Patient.contact.relationship"},
    "Immunization": {"dose_number": "Immunization.protocolApplied.doseNumber", "date_given": "Immunization.occurrenceDateTime",
                     "vaccine": "Immunization.vaccineCode", "id": "Immunization.id", "lot_number": "Immunization.lotNumber",
                     "not_done_reason": "Immunization.statusReason", "override_reason": "Immunization.extension"},
}
_CODE_BY_STATUS = {status: code for _, status, code in STATUS} | {400: "structure", 405: "not-supported", 500: "exception"}


DETAIL_SYSTEM = "urn:nhr:problem"


def status_of(exc: BaseException) -> tuple[int, str]:
    status = getattr(exc, "status", None)  # FhirInvalid: 400 (not valid FHIR), 406, 415 or 422
    for cls, default, code in STATUS:
        if isinstance(exc, cls):
            return (status or default), getattr(exc, "issue_code", None) or ("structure" if status == 400 else code)
    return 500, "exception"


def operation_outcome(status: int, diagnostics: str | None, expression: str | None = None, *,
                      code: str | None = None, severity: str = "error", detail: str | None = None) -> dict:
    """`detail`: the registry's own code for the refusal (e.g. `likely_duplicate_in_file`), as
    `issue.details.coding` in the system DETAIL_SYSTEM."""
    issue: dict = {"severity": severity, "code": code or _CODE_BY_STATUS.get(status, "processing")}
    if detail:
        issue["details"] = {"coding": [{"system": DETAIL_SYSTEM, "code": detail}]}
    if diagnostics:
        issue["diagnostics"] = diagnostics
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def expression_of(field: str | None, resource_type: str | None) -> str | None:
    """A registry field name as a FHIR element path; FHIR paths and header names pass through."""
    if field is None or resource_type is None:
        return field
    return FIELD_PATHS.get(resource_type, {}).get(field, field)


def from_error(exc: BaseException, resource_type: str | None = None) -> tuple[int, dict]:
    status, code = status_of(exc)
    if isinstance(exc, e.DomainError):
        return status, operation_outcome(status, exc.message, expression_of(exc.field, resource_type), code=code,
                                         detail=getattr(exc, "detail_code", None))
    return status, operation_outcome(status, "the request failed; nothing was changed", code=code)


def status_line(status: int) -> str:
    return f"{status} {REASONS.get(status, '')}".strip()
