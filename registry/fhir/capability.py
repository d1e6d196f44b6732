"""The CapabilityStatement, built from data: what is listed here is exactly what is served.

The FHIR routes and the search parser read the same tables (`SEARCH_PARAMS`), so a parameter
cannot be served without being declared or declared without being served. Another module adds
a system-level operation with one call, e.g. bulk export:

    capability.add_system_operation("export", "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
                                    "Bulk Data export (NDJSON) for officials, limited to their jurisdiction")
"""

from __future__ import annotations

from registry.fhir import codes

FHIR_VERSION = "4.0.1"
FORMATS = ["application/fhir+json", "application/json"]

# resource -> [(name, type, documentation)]
SEARCH_PARAMS: dict[str, list[tuple[str, str, str]]] = {
    "Patient": [
        ("identifier", "token", f"system|value, exact match; systems {codes.SID_HEALTH_ID}, {codes.SID_CNIC} "
                                f"(also finds children by their guardian's CNIC), {codes.SID_BFORM}. Search scope."),
        ("birthdate", "date", "prefixes eq, gt, lt, ge, le; precision year, month or day"),
        ("gender", "token", "male | female | other | unknown"),
        ("address-state", "string", "province code, exact (e.g. PK-PB)"),
        ("address-district", "string", "district code, exact (e.g. PK-PB-LAH)"),
    ],
    "Immunization": [
        ("patient", "reference", "Patient/<id>; without it, doses of patients in your capture scope"),
        ("date", "date", "occurrence date; prefixes eq, gt, lt, ge, le"),
        ("vaccine-code", "token", f"[system|]code in {codes.EPI_ANTIGEN}, SNOMED CT, CVX or ICD-11; commas for OR"),
        ("status", "token", "completed | entered-in-error | not-done"),
    ],
    "ImmunizationRecommendation": [("patient", "reference", "Patient/<id> (required)")],
}
RESOURCES: list[dict] = [
    {"type": "Patient", "interactions": ["read", "vread", "search-type", "create"], "conditionalCreate": True,
     "profile": "http://hl7.org/fhir/StructureDefinition/Patient"},
    {"type": "Immunization", "interactions": ["read", "vread", "search-type", "create"], "conditionalCreate": False,
     "profile": "http://hl7.org/fhir/StructureDefinition/Immunization"},
    {"type": "ImmunizationRecommendation", "interactions": ["read", "search-type"], "conditionalCreate": False,
     "profile": "http://hl7.org/fhir/StructureDefinition/ImmunizationRecommendation",
     "documentation": "One per patient (id = the patient's id), computed from the schedule in force"},
]
SYSTEM_INTERACTIONS = [
    ("transaction", "Bundles of Patient and Immunization POST entries; all or nothing"),
    ("batch", "Bundles of Patient and Immunization POST entries; each entry on its own"),
]
SYSTEM_OPERATIONS: list[dict] = []


def param_names(resource_type: str) -> set[str]:
    return {name for name, _, _ in SEARCH_PARAMS[resource_type]}


def add_system_operation(name: str, definition: str, documentation: str | None = None) -> None:
    """Declare a system-level operation (`/fhir/R4/$<name>`); idempotent."""
    if any(op["name"] == name for op in SYSTEM_OPERATIONS):
        return
    op = {"name": name, "definition": definition}
    if documentation:
        op["documentation"] = documentation
    SYSTEM_OPERATIONS.append(op)


def capability_statement(software_version: str, published: str, base_url: str) -> dict:
    """`base_url`: the absolute FHIR base this server answers at (`implementation.url`)."""
    resources = []
    for r in RESOURCES:
        entry = {"type": r["type"], "profile": r["profile"],
                 "interaction": [{"code": code} for code in r["interactions"]],
                 "versioning": "versioned", "readHistory": False, "updateCreate": False,
                 "conditionalCreate": r["conditionalCreate"], "conditionalUpdate": False, "conditionalDelete": "not-supported",
                 "searchParam": [{"name": n, "definition": f"http://hl7.org/fhir/SearchParameter/{r['type']}-{n}", "type": t,
                                  "documentation": doc} for n, t, doc in SEARCH_PARAMS.get(r["type"], [])]}
        if "documentation" in r:
            entry["documentation"] = r["documentation"]
        resources.append(entry)
    rest = {
        "mode": "server",
        "documentation": "NHR FHIR R4 API: the same access scopes, purpose of use (X-Purpose-Of-Use), break-glass "
                         "(X-Break-Glass-Reason) and audit as /api/v1. Paging: the next link carries an opaque _cursor. "
                         "Search result parameters: _count (0 = the total only), _summary=count|false, "
                         "_total=none|estimate|accurate (estimate is answered with the accurate count), _format=json. "
                         "JSON only: another _format or Accept is 406, another body media type 415. "
                         "vread serves the current version only (readHistory false).",
        "security": {"cors": False, "service": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "OAuth"}]}],
            "description": "OAuth2 bearer token from POST /api/v1/auth/token"},
        "resource": resources,
        "interaction": [{"code": code, "documentation": doc} for code, doc in SYSTEM_INTERACTIONS],
    }
    if SYSTEM_OPERATIONS:
        rest["operation"] = [dict(op) for op in SYSTEM_OPERATIONS]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": published,
        "publisher": "National Health Registry",
        "kind": "instance",
        "software": {"name": "NHR", "version": software_version},
        "implementation": {"description": "National Health Registry FHIR R4 endpoint", "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": list(FORMATS),
        "rest": [rest],
    }
