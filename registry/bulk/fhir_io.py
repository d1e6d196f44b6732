"""FHIR resources in and out of bulk files, through the FHIR mapping (`registry/fhir/mapping.py`).

In: a Patient or Immunization resource is validated (fhir.resources) and mapped to the same
`PatientCreate` / `DoseCreate` the API takes; a failure names the FHIR element and a reason
code, never the value. Out: rows decrypted at download time are mapped to R4 resources.
"""

from __future__ import annotations

import uuid

from registry.bulk.rows import Parsed, RowInvalid, derived_id, pydantic_errors

TYPES = ("Patient", "Immunization")


def _as_uuid(value) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def _own_id(sha: str, row: int, resource: dict, full_url: str | None) -> uuid.UUID:
    rid = _as_uuid(resource.get("id")) if resource.get("id") else None
    if rid is None and isinstance(full_url, str) and full_url.startswith("urn:uuid:"):
        rid = _as_uuid(full_url[9:])
    return rid or derived_id(sha, row)


def bundle_ids(sha: str, entries: list[dict]) -> dict[str, uuid.UUID]:
    """fullUrl -> the id the entry's resource will have (without validating anything)."""
    urns = {}
    for row, entry in enumerate(entries, 1):
        resource = entry.get("resource") if isinstance(entry.get("resource"), dict) else {}
        full_url = entry.get("fullUrl")
        if isinstance(full_url, str) and resource.get("resourceType") == "Patient":
            urns[full_url] = _own_id(sha, row, resource, full_url)
    return urns


def check(raw) -> list[tuple[str, str]] | None:
    """Validation alone (the costly part), for a worker process: `raw` is an NDJSON line or a
    resource; returns the row's errors or None. Only codes and element paths cross processes."""
    import json

    from registry.fhir import mapping

    try:
        resource = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return [("row", "json_invalid")]
    if not isinstance(resource, dict):
        return [("row", "json_invalid")]
    if resource.get("resourceType") not in TYPES:
        return [("resourceType", "unsupported_type")]
    try:
        mapping.validate(resource)
    except mapping.FhirInvalid as exc:
        return [(str(exc.expression)[:64] if exc.expression else resource["resourceType"], "fhir_invalid")]
    return None


def parse(sha: str, row: int, resource: dict, urns: dict[str, uuid.UUID], full_url: str | None = None, *,
          validated: bool = False) -> Parsed:
    from pydantic import ValidationError

    from registry.fhir import mapping

    kind = resource.get("resourceType")
    if kind not in TYPES:
        raise RowInvalid([("resourceType", "unsupported_type")])
    try:
        if not validated:
            mapping.validate(resource)
        if kind == "Patient":
            data = mapping.patient_from_fhir(resource)
            pid = data.id or _own_id(sha, row, resource, full_url)
            if full_url:
                urns.setdefault(full_url, pid)
            if resource.get("id") and _as_uuid(resource["id"]) is None:  # `Patient/example` in the same file
                urns.setdefault(f"Patient/{resource['id']}", pid)
            return Parsed("patient", pid, data)
        ref, data = mapping.immunization_from_fhir(resource)
    except mapping.FhirInvalid as exc:
        raise RowInvalid([(str(exc.expression)[:64] if exc.expression else kind, "fhir_invalid")]) from None
    except ValidationError as exc:
        raise RowInvalid(pydantic_errors(exc, prefix=f"{kind}.")) from None
    patient = ref if isinstance(ref, uuid.UUID) else urns.get(str(ref)) or _as_uuid(str(ref).rpartition("/")[2].removeprefix("urn:uuid:"))
    if patient is None:
        raise RowInvalid([("Immunization.patient", "unresolved_reference")])
    return Parsed("dose", data.id or _own_id(sha, row, resource, full_url), data, patient)


def patient_resource(view) -> dict:
    from registry.fhir import mapping

    return mapping.patient_to_fhir(view)


def immunization_resource(view) -> dict:
    from registry.fhir import mapping

    return mapping.immunization_to_fhir(view)
