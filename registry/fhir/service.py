"""FHIR use cases: another door to the same rooms.

Every use case calls the services /api/v1 calls (registry/patients/service.py,
registry/immunizations/service.py, registry/schedules/service.py), so scope, purpose of use,
break-glass and the audit trail are identical; the audit actions are /api/v1's:

- Patient read -> patient.read; search by identifier -> patient.search (search scope);
  search without identifier -> patient.list (capture scope); create -> patient.create
  (a conditional create first searches: patient.search, then patient.create if nothing matched).
- Immunization read and search -> immunization.list; create -> immunization.create.
- ImmunizationRecommendation read -> immunization.schedule.

Where /api/v1 has no exact twin (a single dose read, filtered lists), the use case here follows
the same pattern: `reachable()` for the patient, one event per request, refusals recorded
before raising. Every event carries no clinical data.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Callable

from registry import identifiers
from registry.context import ServiceContext
from registry.errors import Forbidden, InvalidInput, NotFound, PreconditionFailed
from registry.fhir import codes, mapping, search
from registry.fhir.mapping import FhirInvalid
from registry.fhir.params import DateRange, Query, decode_offset, encode_offset, parse_date, reference_id, split_token
from registry.fhir.recommendation import recommendation_to_fhir
from registry.immunizations import repository as dose_repo
from registry.immunizations import service as doses
from registry.immunizations.schemas import DoseCreate
from registry.immunizations.vocabulary import load as vocabulary
from registry.patients import codec
from registry.linkage import steward_repository as linkage_repo
from registry.patients import repository as patient_repo
from registry.patients import service as patients
from registry.patients.models import SEXES
from registry.patients.repository import Access
from registry.schedules import service as schedules
from security.access.permissions import Permission
from security.audit import trail as audit
from security.audit.trail import PatientRef

_HEALTH_ID = re.compile(r"^\d{4}-?\d{4}-?\d{4}$")
# FHIR Immunization.status -> registry dose statuses
_STATUSES = {"completed": ["completed"], "entered-in-error": ["entered-in-error", "superseded"], "not-done": ["not-done"]}


@dataclass
class SearchResult:
    resources: list[dict]
    next_cursor: str | None
    total: int | None


def _id(raw: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound(f"{what} not found") from None


# ---------------------------------------------------------------- Patient

def read_patient(ctx: ServiceContext, raw_id: str) -> dict:
    """A merged record answers with `link` `replaced-by` naming its survivor (issue 13); a
    survivor lists the records it replaces; `seealso` names records of the caller's capture
    scope a data steward marked as possibly the same child."""
    view = patients.read(ctx, _id(raw_id, "patient"))
    return mapping.patient_to_fhir(view, patient_repo.replaced_by(ctx.session, view.id),
                                   linkage_repo.unsure_partners(ctx.session, ctx.principal, view.id))


def vread(res: dict, version_id: str) -> dict:
    """vread of a resource just read (and audited): NHR serves the current version only
    (CapabilityStatement `readHistory: false`); an earlier or unknown version is 404, and the
    unit of work then records the read as `not_found`."""
    if (res.get("meta") or {}).get("versionId") != version_id:
        raise NotFound("this version is not available: only the current version is served")
    return res


def _identifier(value: str, name: str = "identifier") -> tuple[str, str]:
    system, code = split_token(value)
    if system is None and _HEALTH_ID.match(code.strip()):
        return identifiers.HEALTH_ID_SYSTEM, code
    registry_system = codes.SYSTEM_TO_REGISTRY.get(system or "")
    if registry_system is None or not code:
        raise FhirInvalid(name, "must be system|value with a system NHR knows (health-id, cnic, bform: see /fhir/R4/metadata)",
                          status=400)
    return registry_system, code


def _search(ctx: ServiceContext, system: str, value: str, *, expression: str) -> list:
    """The /api/v1 identifier search (search scope, audited); a malformed value names `expression`."""
    try:
        return patients.search(ctx, system, value)
    except InvalidInput as exc:
        exc.field = expression
        raise


def _patient_filters(q: Query) -> tuple[DateRange, str | None, str | None, str | None]:
    birth = DateRange()
    for value in q.all("birthdate"):
        parse_date(value, "birthdate", birth)
    gender = q.one("gender")
    gender = split_token(gender)[1] if gender is not None else None
    if gender is not None and gender not in SEXES:
        raise FhirInvalid("gender", f"must be one of {', '.join(SEXES)}", status=400)
    return birth, gender, q.one("address-state"), q.one("address-district")


def search_patients(ctx: ServiceContext, q: Query) -> SearchResult:
    birth, gender, state, district = _patient_filters(q)
    ident = q.one("identifier")
    if ident is not None:
        matches = _search(ctx, *_identifier(ident), expression="identifier")
        keep = [m for m in matches if birth.contains(m.birth_date) and gender in (None, m.sex)
                and state in (None, m.province) and district in (None, m.district)]
        return SearchResult([] if q.count_only else [mapping.patient_to_fhir(m) for m in keep], None, len(keep))
    action = "patient.list"
    if not ctx.principal.can(Permission.PATIENT_LIST):
        ctx.trail.record(ctx.session, action, audit.DENIED, detail={"reason": "list without identifier"})
        raise Forbidden("your role does not allow listing patients")
    filters = {"birth": birth, "gender": gender, "province": state, "district": district}
    rows, next_cursor = [], None
    if not q.count_only:
        try:
            rows, next_cursor = search.patients_in_capture(ctx.session, ctx.principal, cursor=q.cursor, limit=q.count, **filters)
        except InvalidInput:
            ctx.trail.record(ctx.session, action, audit.INVALID, detail={"field": "_cursor"})
            raise FhirInvalid("_cursor", "is not a valid paging cursor", status=400) from None
    total = search.count_patients_in_capture(ctx.session, ctx.principal, **filters) if q.wants_total else None
    views = [codec.to_view(ctx.runtime.cipher, r) for r in rows]
    ctx.trail.record(ctx.session, action, audit.SUCCESS, subjects=[r.id for r in rows], detail=_detail(q, rows, total))
    return SearchResult([mapping.patient_to_fhir(v) for v in views], next_cursor, total)


def _detail(q: Query, rows: list, total: int | None) -> dict:
    detail = {"count": len(rows), "parameters": sorted(q.params)}
    return detail | {"total": total} if total is not None else detail


def find_existing(ctx: ServiceContext, condition: str, expression: str) -> dict | None:
    """Conditional create: `identifier=system|value` -> the one existing patient, None, or 412."""
    name, _, value = condition.partition("=")
    if name.strip() != "identifier" or not value:
        raise FhirInvalid(expression, "only identifier=system|value is supported", status=400)
    matches = _search(ctx, *_identifier(value.strip(), expression), expression=expression)
    if len(matches) > 1:
        raise PreconditionFailed("the condition matches more than one patient", field=expression)
    return mapping.patient_to_fhir(matches[0]) if matches else None


def create_patient(ctx: ServiceContext, resource: dict, if_none_exist: str | None = None,
                   *, expression: str = "If-None-Exist", confirm_not_duplicate: bool = False) -> tuple[int, dict]:
    """(201, the new Patient) or, for a conditional create that matches, (200, the existing one).
    The new Patient carries the citizen access code once, as an extension (as /api/v1 does).
    A likely duplicate (registry/linkage) is a 409 unless `confirm_not_duplicate` (the
    X-Confirm-Not-Duplicate header); Patient/$match shows the candidates."""
    data = mapping.patient_from_fhir(mapping.validate(resource))
    if confirm_not_duplicate:
        data.confirm_not_duplicate = True
    if if_none_exist:
        existing = find_existing(ctx, if_none_exist, expression)
        if existing is not None:
            return 200, existing
    registered = patients.register(ctx, data)
    out = mapping.patient_to_fhir(registered)
    out["extension"] = [{"url": codes.EXT_ACCESS_CODE, "valueString": registered.access_code}]
    return 201, _extension_first(out)


def _extension_first(res: dict) -> dict:
    order = ["resourceType", "id", "meta", "extension"]
    return {**{k: res[k] for k in order if k in res}, **{k: v for k, v in res.items() if k not in order}}


# ---------------------------------------------------------------- Immunization

def read_immunization(ctx: ServiceContext, raw_id: str) -> dict:
    action = "immunization.list"
    dose_id = _id(raw_id, "immunization")
    dose = dose_repo.get(ctx.session, dose_id)
    if dose is None:
        ctx.trail.record(ctx.session, action, audit.NOT_FOUND, resource_type="Immunization", resource_id=dose_id)
        raise NotFound("immunization not found")
    prow, outside = patients.reachable(ctx, dose.patient_id, action, allow=(Access.CAPTURE, Access.SEARCH), break_glass=True)
    ctx.trail.record(ctx.session, action, audit.SUCCESS, resource_type="Immunization", resource_id=dose_id,
                     patient=PatientRef(prow.id, prow.province, prow.district), outside_capture_scope=outside,
                     detail={"count": 1})
    return mapping.immunization_to_fhir(doses.to_view(ctx, dose))


def _vaccines(values: list[str]) -> list[str] | None:
    if not values:
        return None
    found = []
    for value in values:  # repeated parameters AND, commas OR: intersect the OR sets
        alternatives = set()
        for token in value.split(","):
            system, code = split_token(token)
            if system is None:
                nhr = codes.vaccine_from_coding(codes.EPI_ANTIGEN, code)
                alternatives |= {nhr} if nhr else {v for (s, c), v in codes.MAPPED_TO_NHR.items() if c == code}
            else:  # any code of the vocabulary: the doses recorded under what it counts for first
                nhr = codes.vaccine_from_coding(system, code)
                known = None if nhr else vocabulary().lookup(system, code)
                alternatives |= {nhr} if nhr else ({known[0].vaccine} if known else set())
        found.append(alternatives)
    return sorted(set.intersection(*found))


def _statuses(values: list[str]) -> list[str] | None:
    if not values:
        return None
    sets = []
    for value in values:
        allowed = set()
        for token in value.split(","):
            code = split_token(token)[1]
            if code not in _STATUSES:
                raise FhirInvalid("status", "must be completed, entered-in-error or not-done", status=400)
            allowed |= set(_STATUSES[code])
        sets.append(allowed)
    return sorted(set.intersection(*sets))


def search_immunizations(ctx: ServiceContext, q: Query) -> SearchResult:
    given = DateRange()
    for value in q.all("date"):
        parse_date(value, "date", given)
    vaccines, statuses = _vaccines(q.all("vaccine-code")), _statuses(q.all("status"))
    patient = q.one("patient")
    if patient is not None:
        offset = decode_offset(q.cursor)
        views = doses.list_for_patient(ctx, reference_id(patient, "patient"))
        keep = [v for v in views if given.contains(v.date_given) and (vaccines is None or v.vaccine in vaccines)
                and (statuses is None or v.status in statuses)]
        page = [] if q.count_only else keep[offset:offset + q.count]
        more = encode_offset(offset + q.count) if offset + q.count < len(keep) else None
        return SearchResult([mapping.immunization_to_fhir(v) for v in page], more, len(keep))
    action = "immunization.list"
    filters = {"given": given, "vaccines": vaccines, "statuses": statuses}
    rows, next_cursor = [], None
    if not q.count_only:
        try:
            rows, next_cursor = search.doses_in_capture(ctx.session, ctx.principal, cursor=q.cursor, limit=q.count, **filters)
        except InvalidInput:
            ctx.trail.record(ctx.session, action, audit.INVALID, resource_type="Immunization", detail={"field": "_cursor"})
            raise FhirInvalid("_cursor", "is not a valid paging cursor", status=400) from None
    total = search.count_doses_in_capture(ctx.session, ctx.principal, **filters) if q.wants_total else None
    ctx.trail.record(ctx.session, action, audit.SUCCESS, resource_type="Immunization", subjects=[r.patient_id for r in rows],
                     detail=_detail(q, rows, total))
    return SearchResult([mapping.immunization_to_fhir(doses.to_view(ctx, r)) for r in rows], next_cursor, total)


def immunization_input(resource: dict, resolve: Callable[[str], uuid.UUID] | None = None) -> tuple[uuid.UUID, DoseCreate]:
    """A validated, mapped Immunization: (patient id, dose). `resolve` maps a bundle-internal
    `urn:uuid:` reference to the patient it created."""
    ref, data = mapping.immunization_from_fhir(mapping.validate(resource))
    if isinstance(ref, str):
        if not ref.startswith("urn:uuid:"):
            raise FhirInvalid("Immunization.patient",
                              "must reference a registry patient (Patient/<id>) or a bundle entry (urn:uuid:)")
        if resolve is None:
            raise FhirInvalid("Immunization.patient", "a urn:uuid reference resolves only inside a Bundle")
        ref = resolve(ref)
    return ref, data


def create_immunization(ctx: ServiceContext, resource: dict,
                        resolve: Callable[[str], uuid.UUID] | None = None) -> dict:
    """`resolve` maps a bundle-internal `urn:uuid:` reference to the patient it created."""
    return mapping.immunization_to_fhir(doses.record(ctx, *immunization_input(resource, resolve)))


# ---------------------------------------------------------------- ImmunizationRecommendation

def read_recommendation(ctx: ServiceContext, raw_id: str) -> dict:
    """One recommendation per patient, with the patient's id: the schedule engine's forecast."""
    return recommendation_to_fhir(schedules.for_patient(ctx, _id(raw_id, "recommendation")))


def search_recommendations(ctx: ServiceContext, q: Query) -> SearchResult:
    patient = q.one("patient")
    if patient is None:
        raise FhirInvalid("patient", "is required: recommendations are computed per patient", status=400)
    found = recommendation_to_fhir(schedules.for_patient(ctx, reference_id(patient, "patient")))
    return SearchResult([] if q.count_only else [found], None, 1)
