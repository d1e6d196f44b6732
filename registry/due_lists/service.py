"""Due and overdue (defaulter) lists: who to call or visit for a vaccination session.

- A list is for one place, a facility or a union council (repository.py says which patients
  belong to each), and a date range `from`..`to` (at most MAX_RANGE_DAYS). Each child's doses
  are evaluated by the schedule engine as of `from` with the schedule in force for the child's
  custodian province; a dose is listed if it is overdue, due, or not yet due but recommended
  within the range. Children with nothing to list are skipped.
- Scope (registry/scoping): a clinic worker lists its own facility only; an official lists any
  facility or union council inside its jurisdiction. A place outside scope answers 404 and is
  audited `denied`; an unknown place answers 404 audited `not_found`.
- Only children in the caller's capture scope are examined (the query applies it; an official's
  jurisdiction is the child's residence district, which may differ from the facility's), and a
  row is decrypted only after `access_to` confirms capture scope again (fail closed).
- Every read writes one audit event whose subjects are the listed patients; the detail carries
  the place code and counts, never vaccine or dose.
- Cursor-paginated over patients (newest registered first); a page examines at most MAX_SCAN
  patients, so a page may hold fewer than `limit` rows and still have a next cursor.
"""

from __future__ import annotations

from datetime import date, timedelta

from registry import scoping
from registry.clock import local_today
from registry.context import ServiceContext
from registry.due_lists import repository as repo
from registry.due_lists.schemas import DueDose, DueList, DueRow
from registry.errors import InvalidInput, NotFound
from registry.facilities import repository as facilities
from registry.patients import codec
from registry.patients.repository import Access, access_to
from registry.schedules import engine
from security.audit import trail as audit

ACTION = "immunization.due_list"
MAX_RANGE_DAYS = 92
MAX_SCAN = 2000
_BATCH = 200
_CONTACT = ("given_name", "family_name", "guardian_name", "phone")


def _refuse(ctx: ServiceContext, outcome: str, detail: dict, exc: Exception):
    ctx.trail.record(ctx.session, ACTION, outcome, resource_type="Immunization", detail=detail)
    raise exc


def _range(ctx: ServiceContext, where: dict, date_from: date | None, date_to: date | None) -> tuple[date, date]:
    start = date_from or local_today()
    end = date_to or start
    if end < start:
        _refuse(ctx, audit.INVALID, {**where, "field": "to"}, InvalidInput("`to` is before `from`", field="to"))
    if (end - start) > timedelta(days=MAX_RANGE_DAYS):
        _refuse(ctx, audit.INVALID, {**where, "field": "to"},
                InvalidInput(f"a due list covers at most {MAX_RANGE_DAYS} days", field="to"))
    return start, end


def _place(ctx: ServiceContext, kind: str, code: str):
    """(query of the place's patients, audit detail), or audit and raise NotFound."""
    where = {kind: code}
    if kind == "facility":
        f = facilities.get(ctx.session, code)
        if f is None:
            _refuse(ctx, audit.NOT_FOUND, where, NotFound("facility not found"))
        inside = scoping.in_capture(ctx.principal, province=f.province, district=f.district, facility=f.code)
        query = repo.patients_of_facility(ctx.principal, code)
    else:
        node = ctx.runtime.jurisdictions.get(code, ctx.session)
        if node is None or node.level != "union_council":
            _refuse(ctx, audit.NOT_FOUND, where, NotFound("union council not found"))
        # a union council is no single facility: only jurisdiction-bound officials hold one
        inside = scoping.in_capture(ctx.principal, province=node.province, district=node.district, facility="")
        query = repo.patients_of_union_council(ctx.principal, code)
    if not inside:
        _refuse(ctx, audit.DENIED, where, NotFound(f"{kind.replace('_', ' ')} not found"))
    return query, where


def _listed(forecast: list[engine.Forecast], start: date, end: date) -> list[DueDose]:
    out = []
    for f in forecast:
        if f.status in (engine.DUE, engine.OVERDUE) or (f.status == engine.NOT_YET_DUE and start <= f.recommended <= end):
            status = engine.OVERDUE if f.status == engine.OVERDUE else engine.DUE
            out.append(DueDose(series=f.series, vaccine=f.vaccine, dose_number=f.dose_number, status=status,
                               earliest=f.earliest, recommended=f.recommended, latest=f.latest))
    return out


def _row(ctx: ServiceContext, patient, doses: list[DueDose]) -> DueRow:
    contact = {name: codec.decrypt_column(ctx.runtime.cipher, patient, name) for name in _CONTACT}
    return DueRow(patient_id=patient.id, sex=patient.sex, birth_date=patient.birth_date,
                  home_facility=patient.home_facility, doses=doses, **contact)


def _patients_with_doses(ctx: ServiceContext, query, cursor: str | None):
    """(patient row, its dose rows) in page order, doses fetched one query per batch."""
    for batch in repo.batches(ctx.session, query, cursor, _BATCH):
        given = repo.doses_of(ctx.session, [p.id for p in batch])
        for patient in batch:
            yield patient, given[patient.id]


def due_list(ctx: ServiceContext, kind: str, code: str, *, date_from: date | None, date_to: date | None,
             cursor: str | None, limit: int) -> DueList:
    assert kind in ("facility", "union_council"), kind
    query, where = _place(ctx, kind, code)
    start, end = _range(ctx, where, date_from, date_to)
    schedules: dict[str, engine.Schedule | None] = {}
    items: list[DueRow] = []
    scanned, next_cursor = 0, None
    try:
        for patient, given in _patients_with_doses(ctx, query, cursor):
            scanned += 1
            if patient.custodian not in schedules:
                schedules[patient.custodian] = ctx.runtime.schedules.in_force(ctx.session, patient.custodian, start)[1]
            schedule = schedules[patient.custodian]
            # the query keeps to capture scope already; checked again before anything is decrypted
            if schedule is not None and access_to(ctx.principal, patient) is Access.CAPTURE:
                doses = [engine.Dose(d.vaccine, d.dose_number, d.date_given, d.status) for d in given]
                listed = _listed(engine.evaluate(schedule, patient.birth_date, patient.sex, doses, start).forecast, start, end)
                if listed:
                    items.append(_row(ctx, patient, listed))
            if len(items) == limit or scanned == MAX_SCAN:
                next_cursor = repo.cursor_after(patient)
                break
    except InvalidInput:
        _refuse(ctx, audit.INVALID, {**where, "field": "cursor"}, InvalidInput("cursor is not valid", field="cursor"))
    ctx.trail.record(ctx.session, ACTION, audit.SUCCESS, resource_type="Immunization", subjects=[r.patient_id for r in items],
                     detail={**where, "count": len(items), "scanned": scanned})
    return DueList(place=code, kind=kind, date_from=start, date_to=end, items=items, next_cursor=next_cursor, scanned=scanned)
