"""AEFI use cases. Each writes exactly one audit event, with no clinical data in it (no
vaccine, lot, symptom or seriousness: counts and ids only).

- Record: a clinic worker reports an event after a dose of a patient it can reach (capture or
  search scope, as for recording doses); the dose must not be voided; onset is on or after the
  day the dose was given and not in the future (local date, registry/clock.py). Notes are
  encrypted under the patient's custodian.
- A patient's reports: the reach of the patient's dose list (break-glass allowed, read-only).
- List and count by vaccine and lot: within the caller's capture scope (repository). Counts never
  decrypt; lists decrypt notes of rows in scope only.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from types import SimpleNamespace

from registry.aefi import codes
from registry.aefi import repository as repo
from registry.aefi.schemas import AdverseEventCount, AdverseEventCounts, AdverseEventCreate, AdverseEventView
from registry.clock import local_today
from registry.context import ServiceContext
from registry.errors import Conflict, InvalidInput, NotFound
from registry.immunizations import repository as doses
from registry.immunizations.service import facility_or_refuse
from registry.pagination import Page
from registry.patients.repository import Access
from registry.patients.service import reachable
from security.audit import trail as audit
from security.audit.trail import PatientRef

TABLE = "adverse_events"
RESOURCE = "AdverseEvent"
_REACH = (Access.CAPTURE, Access.SEARCH)


def to_view(ctx: ServiceContext, row) -> AdverseEventView:
    notes = ctx.runtime.cipher.decrypt(row.notes_ct, table=TABLE, column="notes_ct", row_id=row.id, custodian=row.custodian)
    return AdverseEventView.model_construct(
        id=row.id, immunization_id=row.immunization_id, patient_id=row.patient_id, vaccine=row.vaccine,
        lot_number=row.lot_number, facility=row.facility, onset_date=row.onset_date, symptoms=list(row.symptoms),
        seriousness=row.seriousness, serious=row.seriousness != "non_serious", outcome=row.outcome, coding=row.coding,
        notes=notes, reported_by=row.reported_by, reported_at=row.reported_at)


def record(ctx: ServiceContext, dose_id: uuid.UUID, data: AdverseEventCreate) -> AdverseEventView:
    action = "aefi.create"
    dose = doses.get(ctx.session, dose_id)
    if dose is None:
        ctx.trail.record(ctx.session, action, audit.NOT_FOUND, resource_type="Immunization", resource_id=dose_id)
        raise NotFound("immunization not found")
    prow, outside = reachable(ctx, dose.patient_id, action, allow=_REACH)
    pref = PatientRef(prow.id, prow.province, prow.district)
    facility = facility_or_refuse(ctx, action, pref, resource_type=RESOURCE, doing="report adverse events")
    if dose.status == "entered-in-error":
        ctx.trail.record(ctx.session, action, audit.CONFLICT, resource_type="Immunization", resource_id=dose_id, patient=pref)
        raise Conflict("this dose was voided as entered in error; report against the dose actually given", field="immunization_id")
    problem = ("onset date is before the dose was given" if data.onset_date < dose.date_given else
               "onset date cannot be in the future" if data.onset_date > local_today() else None)
    if problem:
        ctx.trail.record(ctx.session, action, audit.INVALID, resource_type=RESOURCE, patient=pref, detail={"field": "onset_date"})
        raise InvalidInput(problem, field="onset_date")
    event_id = uuid.uuid4()
    row = {
        "id": event_id, "version": 1, "immunization_id": dose.id, "patient_id": prow.id, "custodian": prow.custodian,
        "province": prow.province, "district": prow.district, "facility": facility, "vaccine": dose.vaccine,
        "lot_number": dose.lot_number, "onset_date": data.onset_date, "symptoms": data.symptoms,
        "seriousness": data.seriousness, "outcome": data.outcome, "coding": codes.coding(),
        "notes_ct": ctx.runtime.cipher.encrypt(data.notes, table=TABLE, column="notes_ct", row_id=event_id, custodian=prow.custodian),
        "reported_by": ctx.principal.user_id, "reported_at": datetime.now(UTC),
    }
    repo.insert_event(ctx.session, row)
    ctx.trail.record(ctx.session, action, audit.SUCCESS, resource_type=RESOURCE, resource_id=event_id, patient=pref,
                     outside_capture_scope=outside)
    return to_view(ctx, SimpleNamespace(**row))


def list_for_patient(ctx: ServiceContext, patient_id: uuid.UUID) -> list[AdverseEventView]:
    action = "aefi.list"
    prow, outside = reachable(ctx, patient_id, action, allow=_REACH, break_glass=True)
    views = [to_view(ctx, r) for r in repo.for_patient(ctx.session, patient_id)]
    ctx.trail.record(ctx.session, action, audit.SUCCESS, resource_type=RESOURCE,
                     patient=PatientRef(prow.id, prow.province, prow.district), outside_capture_scope=outside,
                     detail={"count": len(views)})
    return views


def _filters(vaccine: str | None, lot_number: str | None, onset_from: date | None, onset_to: date | None) -> dict:
    return {"vaccine": vaccine.strip().upper() if vaccine else None, "lot_number": lot_number,
            "onset_from": onset_from, "onset_to": onset_to}


def list_in_scope(ctx: ServiceContext, *, cursor: str | None, limit: int, vaccine: str | None = None,
                  lot_number: str | None = None, onset_from: date | None = None, onset_to: date | None = None) -> Page[AdverseEventView]:
    action = "aefi.list"
    try:
        rows, next_cursor = repo.list_in_scope(ctx.session, ctx.principal, cursor=cursor, limit=limit,
                                               **_filters(vaccine, lot_number, onset_from, onset_to))
    except InvalidInput:
        ctx.trail.record(ctx.session, action, audit.INVALID, resource_type=RESOURCE, detail={"field": "cursor"})
        raise
    views = [to_view(ctx, r) for r in rows]
    ctx.trail.record(ctx.session, action, audit.SUCCESS, resource_type=RESOURCE, subjects=[r.patient_id for r in rows],
                     detail={"count": len(rows)})
    return Page(views, next_cursor)


def counts(ctx: ServiceContext, *, vaccine: str | None = None, lot_number: str | None = None,
           onset_from: date | None = None, onset_to: date | None = None) -> AdverseEventCounts:
    rows = repo.counts_in_scope(ctx.session, ctx.principal, **_filters(vaccine, lot_number, onset_from, onset_to))
    groups = [AdverseEventCount(vaccine=r.vaccine, lot_number=r.lot_number, reports=r.reports, serious=int(r.serious or 0),
                                deaths=int(r.deaths or 0)) for r in rows]
    ctx.trail.record(ctx.session, "aefi.count", audit.SUCCESS, resource_type=RESOURCE, detail={"groups": len(groups)})
    return AdverseEventCounts(coding=codes.coding(), groups=groups, total=sum(g.reports for g in groups))
