"""Dose use cases. Each writes exactly one audit event.

Reach: recording and listing doses works for patients in the caller's capture scope *or*
search scope (a visiting child, found by exact identifier, is vaccinated where it shows up);
outside capture scope the event is flagged `outside_capture_scope`. Amending (correct, void)
is only for the facility that recorded the dose: no clinic changes another's records.

Recording and correcting validate the dose (validation.py). A dose that breaks an overridable
rule is refused (422 with the rule code) unless the request gives `override_reason`; then it is
recorded with the rule and the encrypted reason, and the audit event says `override: true` and
the rule code only (never the reason's text, never vaccine or dose).
"""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from datetime import UTC, datetime

from registry.clock import local_today
from registry.context import ServiceContext
from registry.errors import Conflict, Forbidden, InvalidInput, NotFound, PreconditionFailed, PreconditionRequired
from registry.immunizations import repository as repo
from registry.immunizations import intake, not_done, validation
from registry.immunizations.schemas import DoseCorrection, DoseCreate, DoseView, DoseVoid, VaccineCode
from registry.patients.repository import Access
from registry.patients.service import parse_if_match, reachable
from registry.reports import queue as report_queue
from security.audit import trail as audit
from security.audit.trail import PatientRef

TABLE = "immunizations"
_REACH = (Access.CAPTURE, Access.SEARCH)


def _reason_ct(ctx: ServiceContext, custodian: str, dose_id: uuid.UUID, reason: str) -> bytes:
    return ctx.runtime.cipher.encrypt(reason, table=TABLE, column="status_reason_ct", row_id=dose_id, custodian=custodian)


def text(ctx: ServiceContext, row, column: str) -> str | None:
    """An encrypted free-text column of a dose row, decrypted (None when absent)."""
    value = getattr(row, column, None)
    if value is None:
        return None
    return ctx.runtime.cipher.decrypt(value, table=TABLE, column=column, row_id=row.id, custodian=row.custodian)


def counts_for(row, components=()) -> list[str]:
    """The EPI vaccines a dose row counts for (itself and its component rows)."""
    own = [row.vaccine] if row.vaccine in validation.VACCINES else []
    return own + [c.vaccine for c in components]


def to_view(ctx: ServiceContext, row, validity: tuple[str | None, str | None] = (None, None), components=()) -> DoseView:
    here = getattr(row, "administered_here", True)
    code_text = text(ctx, row, "code_text_ct")
    system, code = getattr(row, "code_system", None), getattr(row, "code", None)
    view = DoseView.model_construct(
        id=row.id, patient_id=row.patient_id, vaccine=row.vaccine, dose_number=row.dose_number, date_given=row.date_given,
        lot_number=row.lot_number, facility=row.facility, performer_id=row.performer_id if here else None,
        status=row.status, status_reason=text(ctx, row, "status_reason_ct"), supersedes_id=row.supersedes_id,
        recorded_at=row.recorded_at, version=row.version, validity=validity[0], validity_reason=validity[1],
        override_rule=getattr(row, "override_rule", None), override_reason=text(ctx, row, "override_reason_ct"),
        provenance="administered" if here else "reported", primary_source=getattr(row, "primary_source", True),
        recorder_id=row.performer_id, report_origin=getattr(row, "report_origin", None),
        performer_facility=getattr(row, "performer_facility", None), performer_text=text(ctx, row, "performer_text_ct"),
        location_text=text(ctx, row, "location_text_ct"), country=getattr(row, "country", None),
        occurrence_text=text(ctx, row, "occurrence_text_ct"), source_recorded=getattr(row, "source_recorded", None),
        code=VaccineCode.model_construct(system=system, code=code, text=code_text) if (code or code_text) else None,
        counts_for=counts_for(row, components), not_done_reason=getattr(row, "not_done_reason", None), dose_number_inferred=getattr(row, "dose_number_inferred", False),
    )
    view._fhir_source = fhir_source(ctx, row)
    return view


def fhir_source(ctx: ServiceContext, row) -> dict | None:
    """The provenance elements of the FHIR Immunization the dose came from, exactly as sent."""
    import json

    raw = text(ctx, row, "fhir_source_ct")
    return json.loads(raw) if raw is not None else None


def _validate(ctx: ServiceContext, action: str, prow, pref: PatientRef, vaccine: str, dose_number: int, date_given,
              override_reason: str | None, *, resource_id=None, replacing=None, reported: bool = False) -> validation.Verdict:
    """Refuse (audited `invalid`, with the rule code) or return the verdict to record. A
    reported dose is refused only for impossible facts."""
    try:
        verdict = validation.check(ctx, prow, vaccine, dose_number, date_given, replacing=replacing, reported=reported)
        if verdict.rule is not None and override_reason is None and not reported:
            raise validation.DoseRefused(verdict.rule, overridable=True)
    except InvalidInput as exc:
        ctx.trail.record(ctx.session, action, audit.INVALID, resource_type="Immunization", resource_id=resource_id,
                         patient=pref, detail={"field": exc.field, "rule": getattr(exc, "code", None)})
        raise
    return verdict


def override_columns(ctx: ServiceContext, custodian: str, dose_id: uuid.UUID, verdict, override_reason: str | None) -> dict:
    """The dose row's override columns: the overridden rule and its reason, encrypted; none when
    the verdict overrode nothing (shared by the single route and the set-based path)."""
    if verdict.rule is None:  # nothing to override: a reason given anyway is not kept
        return {"override_rule": None, "override_reason_ct": None}
    return {"override_rule": verdict.rule,
            "override_reason_ct": ctx.runtime.cipher.encrypt(override_reason, table=TABLE, column="override_reason_ct",
                                                             row_id=dose_id, custodian=custodian)}


def override_detail(verdict) -> dict:
    """What the audit event says of an override: the rule, never the reason."""
    return {"override": True, "rule": verdict.rule} if verdict.rule is not None else {}


def facility_or_refuse(ctx: ServiceContext, action: str, patient, *, resource_type: str = "Immunization",
                       doing: str = "record or amend doses") -> str:
    """The caller's facility; staff not bound to one are refused (audited `denied`)."""
    facility = ctx.principal.facility
    if facility is None:
        ctx.trail.record(ctx.session, action, audit.DENIED, resource_type=resource_type, patient=patient,
                         detail={"reason": "not bound to a facility"})
        raise Forbidden(f"only staff bound to a facility can {doing}")
    return facility


def record(ctx: ServiceContext, patient_id: uuid.UUID, data: DoseCreate) -> DoseView:
    action = "immunization.create"
    prow, outside = reachable(ctx, patient_id, action, allow=_REACH, for_dose=True)  # merged meanwhile: 409 `merged`
    pref = PatientRef(prow.id, prow.province, prow.district)
    facility = facility_or_refuse(ctx, action, pref)
    dose_id = data.id or uuid.uuid4()
    # before validation: a re-sent offline dose is a 409 on its id, not a refused duplicate
    if data.id is not None and repo.get(ctx.session, dose_id) is not None:
        ctx.trail.record(ctx.session, action, audit.CONFLICT, resource_type="Immunization", resource_id=dose_id, patient=pref)
        raise Conflict("a dose with this id already exists", field="id")
    today = local_today()
    try:
        built = intake.build(ctx.runtime.cipher, prow, data, dose_id,
                             existing=lambda: repo.for_patient(ctx.session, prow.id),
                             schedule=lambda: ctx.runtime.schedules.in_force(ctx.session, prow.custodian, today)[1],
                             today=today, now=datetime.now(UTC), facility=facility, user_id=ctx.principal.user_id)
    except InvalidInput as exc:
        ctx.trail.record(ctx.session, action, audit.INVALID, resource_type="Immunization", patient=pref,
                         detail={"field": exc.field, "rule": getattr(exc, "code", None)})
        raise
    for row in built.rows:
        repo.insert_dose(ctx.session, row)
    if any(r["dose_number_inferred"] for r in built.rows):  # a dose reported late may move the others along
        numbers = validation.inferred_numbers(ctx.runtime.schedules.in_force(ctx.session, prow.custodian, today)[1], prow,
                                              repo.for_patient(ctx.session, prow.id), today)
        repo.set_inferred_numbers(ctx.session, numbers)
        for r in built.rows:
            r["dose_number"] = numbers.get(r["id"], r["dose_number"])
    report_queue.mark(ctx.session, prow.id)  # coverage aggregates: refreshed before the next report
    ctx.trail.record(ctx.session, action, audit.SUCCESS, resource_type="Immunization", resource_id=dose_id, patient=pref,
                     outside_capture_scope=outside,  # no vaccine or dose in the event: auditors see no clinical data
                     detail=not_done_detail(data) or (override_detail(built.verdict) if data.administered_here
                                                                  else {"reported": True}) or None)
    return to_view(ctx, SimpleNamespace(**built.row), (built.verdict.validity, built.verdict.rule),
                   [SimpleNamespace(**r) for r in built.rows[1:]])


def not_done_detail(data: DoseCreate) -> dict:
    """What the audit event says of a dose not given: that it was not given, never the reason."""
    return {"status": not_done.STATUS} if data.status == not_done.STATUS else {}


def list_for_patient(ctx: ServiceContext, patient_id: uuid.UUID) -> list[DoseView]:
    action = "immunization.list"
    prow, outside = reachable(ctx, patient_id, action, allow=_REACH, break_glass=True)
    rows = repo.for_patient(ctx.session, patient_id)
    today = local_today()
    _, schedule = ctx.runtime.schedules.in_force(ctx.session, prow.custodian, today)
    judged = validation.validities(schedule, prow, rows, today)
    parts: dict = {}
    for r in rows:
        if r.component_of is not None:
            parts.setdefault(r.component_of, []).append(r)
    views = [to_view(ctx, r, judged.get(r.id, (None, None)), parts.get(r.id, ())) for r in rows if r.component_of is None]
    ctx.trail.record(ctx.session, action, audit.SUCCESS, resource_type="Immunization",
                     patient=PatientRef(prow.id, prow.province, prow.district), outside_capture_scope=outside,
                     detail={"count": len(views)})
    return views


def _amendable(ctx: ServiceContext, dose_id: uuid.UUID, action: str, if_match: str | None,
               statuses: tuple[str, ...] = ("completed",)):
    dose = repo.get(ctx.session, dose_id)
    if dose is None:
        ctx.trail.record(ctx.session, action, audit.NOT_FOUND, resource_type="Immunization", resource_id=dose_id)
        raise NotFound("immunization not found")
    prow, _ = reachable(ctx, dose.patient_id, action, allow=_REACH)
    pref = PatientRef(prow.id, prow.province, prow.district)
    facility = facility_or_refuse(ctx, action, pref)
    if dose.facility != facility:
        ctx.trail.record(ctx.session, action, audit.DENIED, resource_type="Immunization", resource_id=dose_id, patient=pref,
                         detail={"reason": "recorded by another facility"})
        raise Forbidden("only the facility that recorded a dose can correct or void it")
    try:
        expected = parse_if_match(if_match)
        if expected != dose.version or dose.status not in statuses:
            raise PreconditionFailed("the dose has changed since it was read (or is already amended)", field="If-Match")
    except (PreconditionFailed, PreconditionRequired):
        ctx.trail.record(ctx.session, action, audit.CONFLICT, resource_type="Immunization", resource_id=dose_id, patient=pref)
        raise
    return dose, prow, pref, expected


def void(ctx: ServiceContext, dose_id: uuid.UUID, if_match: str | None, data: DoseVoid) -> DoseView:
    action = "immunization.void"
    amendable = ("completed", not_done.STATUS)  # a not-done record entered by mistake is voided too
    dose, _, pref, expected = _amendable(ctx, dose_id, action, if_match, amendable)
    if not repo.set_status(ctx.session, dose_id, expected, "entered-in-error", _reason_ct(ctx, dose.custodian, dose_id, data.reason),
                           amendable):
        ctx.trail.record(ctx.session, action, audit.CONFLICT, resource_type="Immunization", resource_id=dose_id, patient=pref)
        raise PreconditionFailed("the dose has changed since it was read", field="If-Match")
    repo.set_components_status(ctx.session, dose_id, "entered-in-error")
    report_queue.mark(ctx.session, dose.patient_id)  # coverage aggregates: refreshed before the next report
    ctx.trail.record(ctx.session, action, audit.SUCCESS, resource_type="Immunization", resource_id=dose_id, patient=pref)
    return to_view(ctx, repo.get(ctx.session, dose_id))


_CLEAR = ("primary_source", "administered_here", "report_origin", "performer_facility", "country", "source_recorded",
          "code_system", "code")
_SEALED = ("performer_text_ct", "location_text_ct", "occurrence_text_ct", "code_text_ct", "fhir_source_ct")


def _carried(ctx: ServiceContext, dose, new_id: uuid.UUID, *, inferred: bool, part: bool = False) -> dict:
    """A correction's provenance and code columns, taken from the dose it replaces (free texts
    re-encrypted for the new row, to which their ciphertext is bound)."""
    out = {c: getattr(dose, c) for c in _CLEAR}
    for column in _SEALED:
        value = text(ctx, dose, column)
        out[column] = None if value is None or (part and column == "fhir_source_ct") else ctx.runtime.cipher.encrypt(
            value, table=TABLE, column=column, row_id=new_id, custodian=dose.custodian)
    out["dose_number_inferred"] = inferred
    return out


def correct(ctx: ServiceContext, dose_id: uuid.UUID, if_match: str | None, data: DoseCorrection) -> DoseView:
    action = "immunization.correct"
    dose, prow, pref, expected = _amendable(ctx, dose_id, action, if_match)
    vaccine = data.vaccine or dose.vaccine
    dose_number = data.dose_number if data.dose_number is not None else dose.dose_number
    date_given = data.date_given or dose.date_given
    here = dose.administered_here
    verdict = _validate(ctx, action, prow, pref, vaccine, dose_number, date_given, data.override_reason,
                        resource_id=dose_id, replacing=dose_id, reported=not here)
    if not repo.set_status(ctx.session, dose_id, expected, "superseded", _reason_ct(ctx, dose.custodian, dose_id, data.reason)):
        ctx.trail.record(ctx.session, action, audit.CONFLICT, resource_type="Immunization", resource_id=dose_id, patient=pref)
        raise PreconditionFailed("the dose has changed since it was read", field="If-Match")
    new_id = uuid.uuid4()
    row = {
        "id": new_id, "version": 1, "patient_id": dose.patient_id, "custodian": dose.custodian, "province": dose.province,
        "district": dose.district, "facility": dose.facility, "vaccine": vaccine, "dose_number": dose_number,
        "date_given": date_given, "lot_number": data.lot_number if data.lot_number is not None else dose.lot_number,
        "performer_id": dose.performer_id, "status": "completed",
        "status_reason_ct": _reason_ct(ctx, dose.custodian, new_id, data.reason), "supersedes_id": dose_id,
        "recorded_at": datetime.now(UTC),
        **(override_columns(ctx, dose.custodian, new_id, verdict, data.override_reason) if here else {}),
        **_carried(ctx, dose, new_id, inferred=dose.dose_number_inferred and data.dose_number is None),
    }
    repo.insert_dose(ctx.session, row)
    parts, new_parts = repo.set_components_status(ctx.session, dose_id, "superseded"), []
    if vaccine == dose.vaccine:  # the same product: its further EPI vaccines count again, from the new row
        for part in parts:
            part_id = uuid.uuid5(new_id, part.vaccine)
            new_parts.append({**row, "id": part_id, "vaccine": part.vaccine, "dose_number": part.dose_number,
                              "component_of": new_id, "status_reason_ct": None, "override_rule": None,
                              "override_reason_ct": None, **_carried(ctx, dose, part_id, inferred=True, part=True)})
            repo.insert_dose(ctx.session, new_parts[-1])
    fields = sorted(data.model_dump(exclude_unset=True, exclude={"reason", "override_reason"}))
    report_queue.mark(ctx.session, dose.patient_id)  # coverage aggregates: refreshed before the next report
    ctx.trail.record(ctx.session, action, audit.SUCCESS, resource_type="Immunization", resource_id=dose_id, patient=pref,
                     detail={"replacement": str(new_id), "fields": fields, **override_detail(verdict)})
    return to_view(ctx, SimpleNamespace(**row), (verdict.validity, verdict.rule), [SimpleNamespace(**p) for p in new_parts])
