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
from registry.immunizations import not_done, validation
from registry.immunizations.schemas import DoseCorrection, DoseCreate, DoseView, DoseVoid
from registry.patients.repository import Access
from registry.patients.service import parse_if_match, reachable
from registry.reports import queue as report_queue
from security.audit import trail as audit
from security.audit.trail import PatientRef

TABLE = "immunizations"
_REACH = (Access.CAPTURE, Access.SEARCH)


def _reason_ct(ctx: ServiceContext, custodian: str, dose_id: uuid.UUID, reason: str) -> bytes:
    return ctx.runtime.cipher.encrypt(reason, table=TABLE, column="status_reason_ct", row_id=dose_id, custodian=custodian)


def to_view(ctx: ServiceContext, row, validity: tuple[str | None, str | None] = (None, None)) -> DoseView:
    decrypt = ctx.runtime.cipher.decrypt
    reason = decrypt(row.status_reason_ct, table=TABLE, column="status_reason_ct", row_id=row.id, custodian=row.custodian)
    override_ct = getattr(row, "override_reason_ct", None)
    override = decrypt(override_ct, table=TABLE, column="override_reason_ct", row_id=row.id, custodian=row.custodian) \
        if override_ct is not None else None
    return DoseView.model_construct(
        id=row.id, patient_id=row.patient_id, vaccine=row.vaccine, dose_number=row.dose_number, date_given=row.date_given,
        lot_number=row.lot_number, facility=row.facility, performer_id=row.performer_id, status=row.status,
        status_reason=reason, supersedes_id=row.supersedes_id, recorded_at=row.recorded_at, version=row.version,
        validity=validity[0], validity_reason=validity[1], override_rule=getattr(row, "override_rule", None),
        override_reason=override, not_done_reason=getattr(row, "not_done_reason", None),
    )


def _validate(ctx: ServiceContext, action: str, prow, pref: PatientRef, vaccine: str, dose_number: int, date_given,
              override_reason: str | None, *, resource_id=None, replacing=None) -> validation.Verdict:
    """Refuse (audited `invalid`, with the rule code) or return the verdict to record."""
    try:
        verdict = validation.check(ctx, prow, vaccine, dose_number, date_given, replacing=replacing)
        if verdict.rule is not None and override_reason is None:
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
    prow, outside = reachable(ctx, patient_id, action, allow=_REACH)
    pref = PatientRef(prow.id, prow.province, prow.district)
    facility = facility_or_refuse(ctx, action, pref)
    dose_id = data.id or uuid.uuid4()
    # before validation: a re-sent offline dose is a 409 on its id, not a refused duplicate
    if data.id is not None and repo.get(ctx.session, dose_id) is not None:
        ctx.trail.record(ctx.session, action, audit.CONFLICT, resource_type="Immunization", resource_id=dose_id, patient=pref)
        raise Conflict("a dose with this id already exists", field="id")
    if data.status == not_done.STATUS:
        verdict = _not_done(ctx, action, prow, pref, data)
    else:
        verdict = _validate(ctx, action, prow, pref, data.vaccine, data.dose_number, data.date_given, data.override_reason)
    row = {
        "id": dose_id, "version": 1, "patient_id": prow.id, "custodian": prow.custodian, "province": prow.province,
        "district": prow.district, "facility": facility, "vaccine": data.vaccine, "dose_number": data.dose_number,
        "date_given": data.date_given, "lot_number": data.lot_number, "performer_id": ctx.principal.user_id,
        "status": data.status, "status_reason_ct": None, "supersedes_id": None, "recorded_at": datetime.now(UTC),
        "not_done_reason": data.not_done_reason,
        **override_columns(ctx, prow.custodian, dose_id, verdict, data.override_reason),
    }
    repo.insert_dose(ctx.session, row)
    report_queue.mark(ctx.session, prow.id)  # coverage aggregates: refreshed before the next report
    ctx.trail.record(ctx.session, action, audit.SUCCESS, resource_type="Immunization", resource_id=dose_id, patient=pref,
                     outside_capture_scope=outside,  # no vaccine or dose in the event: auditors see no clinical data
                     detail=override_detail(verdict) or not_done_detail(data) or None)
    return to_view(ctx, SimpleNamespace(**row), (verdict.validity, verdict.rule))


def _not_done(ctx: ServiceContext, action: str, prow, pref: PatientRef, data: DoseCreate) -> validation.Verdict:
    """A dose not given: only impossible facts are refused (audited `invalid`); no schedule verdict."""
    try:
        not_done.judge(prow, data, local_today())
    except InvalidInput as exc:
        ctx.trail.record(ctx.session, action, audit.INVALID, resource_type="Immunization", patient=pref,
                         detail={"field": exc.field, "rule": getattr(exc, "code", None)})
        raise
    return validation.Verdict(None, None)


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
    views = [to_view(ctx, r, judged.get(r.id, (None, None))) for r in rows]
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
    report_queue.mark(ctx.session, dose.patient_id)  # coverage aggregates: refreshed before the next report
    ctx.trail.record(ctx.session, action, audit.SUCCESS, resource_type="Immunization", resource_id=dose_id, patient=pref)
    return to_view(ctx, repo.get(ctx.session, dose_id))


def correct(ctx: ServiceContext, dose_id: uuid.UUID, if_match: str | None, data: DoseCorrection) -> DoseView:
    action = "immunization.correct"
    dose, prow, pref, expected = _amendable(ctx, dose_id, action, if_match)
    vaccine = data.vaccine or dose.vaccine
    dose_number = data.dose_number if data.dose_number is not None else dose.dose_number
    date_given = data.date_given or dose.date_given
    verdict = _validate(ctx, action, prow, pref, vaccine, dose_number, date_given, data.override_reason,
                        resource_id=dose_id, replacing=dose_id)
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
        "recorded_at": datetime.now(UTC), **override_columns(ctx, dose.custodian, new_id, verdict, data.override_reason),
    }
    repo.insert_dose(ctx.session, row)
    fields = sorted(data.model_dump(exclude_unset=True, exclude={"reason", "override_reason"}))
    report_queue.mark(ctx.session, dose.patient_id)  # coverage aggregates: refreshed before the next report
    ctx.trail.record(ctx.session, action, audit.SUCCESS, resource_type="Immunization", resource_id=dose_id, patient=pref,
                     detail={"replacement": str(new_id), "fields": fields, **override_detail(verdict)})
    return to_view(ctx, SimpleNamespace(**row), (verdict.validity, verdict.rule))
