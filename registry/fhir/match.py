"""FHIR `Patient/$match` (https://hl7.org/fhir/R4/patient-operation-match.html).

In: a Parameters resource with `resource` (a Patient), optional `onlyCertainMatches` (boolean)
and `count` (integer). Out: a searchset Bundle, best first, each entry with `search.mode` match,
`search.score` (the match probability) and the `match-grade` extension (certain, probable,
possible, and certainly-not for a record a steward decided is not the same child as the record
the Patient resource's `id` names). Candidates come from the matching engine
(registry/linkage/service.match) within the caller's search scope: the full record in capture scope, identity confirmation only outside it,
exactly as identifier search answers. One `patient.search` audit event (`via: $match`).
"""

from __future__ import annotations

import uuid

from registry.context import ServiceContext
from registry.fhir import mapping
from registry.fhir.mapping import FhirInvalid
from registry.linkage import records
from registry.linkage import service as linkage

MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"
MAX_COUNT = 50


def _subject(resource: dict) -> uuid.UUID | None:
    """The id of an existing record the Patient resource names (to match it against the others)."""
    rid = resource.get("id")
    if rid is None:
        return None
    try:
        return uuid.UUID(str(rid))
    except ValueError:
        raise FhirInvalid("Parameters.parameter.resource.id", "must be the id of a Patient of this registry", status=400) from None


def _parameters(body: dict) -> tuple[dict, bool, int]:
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise FhirInvalid("Parameters", "the body must be a Parameters resource", status=400)
    resource, only_certain, count = None, False, 10
    for i, p in enumerate(body.get("parameter") or []):
        name = p.get("name") if isinstance(p, dict) else None
        if name == "resource":
            resource = p.get("resource")
        elif name == "onlyCertainMatches":
            if not isinstance(p.get("valueBoolean"), bool):
                raise FhirInvalid(f"Parameters.parameter[{i}].valueBoolean", "onlyCertainMatches must be a boolean", status=400)
            only_certain = p["valueBoolean"]
        elif name == "count":
            v = p.get("valueInteger")
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_COUNT:
                raise FhirInvalid(f"Parameters.parameter[{i}].valueInteger", f"count must be an integer from 1 to {MAX_COUNT}",
                                  status=400)
            count = v
    if not isinstance(resource, dict) or resource.get("resourceType") != "Patient":
        raise FhirInvalid("Parameters.parameter.resource", "a Patient resource is required", status=400)
    return resource, only_certain, count


def _record(resource: dict) -> dict:
    patient = mapping.validate(resource)
    unnamed = not any((n or {}).get("given") for n in patient.get("name") or [])
    if unnamed:  # a newborn without a name yet: matched on the other fields, the given name is "no evidence"
        patient = {**patient, "name": [{**((patient.get("name") or [{}])[0]), "given": ["Baby"]}]}
    data = mapping.patient_from_fhir(patient)
    g = data.guardian
    return records.from_input(given_name=data.given_name, family_name=data.family_name, guardian_name=g.name if g else None,
                              guardian_cnic=g.cnic if g else None, bform=data.bform, phone=data.phone,
                              birth_date=data.birth_date, sex=data.sex, facility=None, district=data.district,
                              province=None, unnamed=unnamed)


def match(ctx: ServiceContext, body: dict) -> list[tuple[dict, float, str]]:
    """(Patient resource, score, grade) of each candidate, best first."""
    resource, only_certain, count = _parameters(body)
    subject = _subject(resource)
    rec = _record(resource)
    found = linkage.match(ctx, rec, only_certain=only_certain, count=count, subject=subject)
    return [(mapping.patient_to_fhir(view), round(s.probability, 6), s.grade) for view, s in found]


def bundle(base: str, found: list[tuple[dict, float, str]]) -> dict:
    return {"resourceType": "Bundle", "type": "searchset", "total": len(found), "entry": [
        {"fullUrl": f"{base}/Patient/{res['id']}", "resource": res,
         "search": {"mode": "match", "score": score,
                    "extension": [{"url": MATCH_GRADE, "valueCode": grade}]}}
        for res, score, grade in found]}
