"""Recording a dose on the event loop (issue 17): `service.record` on the async unit of work
(registry/async_unit.py), PostgreSQL only; on SQLite `record_async` runs `service.record` in a
worker thread. Same checks in the same order, same refusals, rows and event.

Round trips (the sync path makes 6-7, each a thread hand-off):
1. one message: BEGIN, the patient `FOR KEY SHARE` (the dose-vs-merge race: a merge either waits
   for this dose to commit and moves it, or committed first and the dose is refused 409
   `merged`, registry/patients/repository.lock_for_doses), the patient's doses, a client-chosen
   dose id if taken, and the schedule row in force (when the node's country is known: a
   single-country node after its first dose). Literal SQL rendered by SQLAlchemy
   (`literal_binds`) from the path's UUID, the date and the reference data's codes;
2. one write: the dose rows, the dirty-patient mark and the audit event (data-modifying CTEs);
3. COMMIT, by the unit of work (after the Idempotency-Key's stored response, when there is one).

A dose whose number is inferred (a reported dose without one) renumbers the patient's inferred
doses after the write, as the sync path does: two more round trips, for those doses only. The
schedule's row is read in a worker thread (the sync cache) when its country or parsed document is
not cached yet: once per process and schedule.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from functools import lru_cache
from types import SimpleNamespace

from anyio import to_thread
from sqlalchemy import bindparam, insert, select, update

from registry.async_database import Compiled
from registry.async_unit import AsyncUnit
from registry.audit_log import async_events
from registry.clock import local_today
from registry.context import ServiceContext
from registry.errors import Conflict, Forbidden, InvalidInput
from registry.immunizations import intake, service, validation
from registry.immunizations.repository import DOSES
from registry.immunizations.schemas import DoseCreate, DoseView
from registry.patients import repository as patients
from registry.patients.reach import reach
from registry.reports.models import DirtyPatient
from registry.schedules import repository as schedules
from security.audit import trail as audit
from security.audit.trail import PatientRef

ACTION = "immunization.create"
DIRTY = DirtyPatient.__table__


async def record_async(ctx: ServiceContext, patient_id: uuid.UUID, data: DoseCreate) -> DoseView:
    if ctx.unit is None:
        return await to_thread.run_sync(service.record, ctx, patient_id, data)
    return await _record(ctx, ctx.unit, patient_id, data)


def _book(ctx: ServiceContext):
    def record(action, outcome, **event):
        async_events.book_refusal(ctx.trail, action, outcome, **event)
    return record


async def _record(ctx: ServiceContext, unit: AsyncUnit, patient_id: uuid.UUID, data: DoseCreate) -> DoseView:
    rt = ctx.runtime
    today = local_today()
    sc = rt.schedules
    countries = set(sc.known_countries().values())
    country = countries.pop() if len(countries) == 1 else None
    results = await unit.begin(_first(country, today, data.id is not None), {"pid": patient_id, "dose_id": data.id})
    prow_rows, existing = results[0], results[1]
    prow = prow_rows[0] if prow_rows else None
    access = patients.access_to(ctx.principal, prow) if prow is not None else patients.Access.NONE
    prow, outside = reach(ctx, prow, access, patient_id, ACTION, allow=service._REACH, break_glass=False,
                                          record=_book(ctx))
    pref = PatientRef(prow.id, prow.province, prow.district)
    facility = ctx.principal.facility
    if facility is None:
        async_events.book_refusal(ctx.trail, ACTION, audit.DENIED, resource_type="Immunization", patient=pref,
                                  detail={"reason": "not bound to a facility"})
        raise Forbidden("only staff bound to a facility can record or amend doses")
    dose_id = data.id or uuid.uuid4()
    if data.id is not None and results[-1]:  # before validation: a re-sent offline dose is a 409 on its id
        async_events.book_refusal(ctx.trail, ACTION, audit.CONFLICT, resource_type="Immunization", resource_id=dose_id,
                                  patient=pref)
        raise Conflict("a dose with this id already exists", field="id")
    schedule_row = (results[2][0] if results[2] else None) if country is not None else ...
    schedule = await _schedule(ctx, unit, prow.custodian, today, country, schedule_row)
    try:
        built = intake.build(rt.cipher, prow, data, dose_id, existing=lambda: existing, schedule=lambda: schedule,
                             today=today, now=datetime.now(UTC), facility=facility, user_id=ctx.principal.user_id)
    except InvalidInput as exc:
        async_events.book_refusal(ctx.trail, ACTION, audit.INVALID, resource_type="Immunization", patient=pref,
                                  detail={"field": exc.field, "rule": getattr(exc, "code", None)})
        raise
    event = ctx.trail.build(ACTION, audit.SUCCESS, resource_type="Immunization", resource_id=dose_id, patient=pref,
                            outside_capture_scope=outside,  # no vaccine or dose in the event: auditors see no clinical data
                            detail=service.not_done_detail(data) or (service.override_detail(built.verdict)
                                                                     if data.administered_here else {"reported": True}) or None)
    values = {f"d{i}_{k}": v for i, r in enumerate(built.rows) for k, v in r.items()}
    values.update(async_events.after_values(event, [], unit.db.event_mac), p_id=prow.id)
    await unit.execute(_write(tuple(built.row), len(built.rows)), values)
    ctx.trail.written(event, [])
    if any(r["dose_number_inferred"] for r in built.rows):  # a dose reported late may move the others along
        rows = await unit.all(_DOSES_OF, {"patient_id": prow.id})
        numbers = validation.inferred_numbers(schedule, prow, rows, today)
        for dose, number in numbers.items():
            await unit.execute(_RENUMBER, {"dose_id": dose, "number": number, "now": datetime.now(UTC)})
        for r in built.rows:
            r["dose_number"] = numbers.get(r["id"], r["dose_number"])
    return service.to_view(ctx, SimpleNamespace(**built.row), (built.verdict.validity, built.verdict.rule),
                           [SimpleNamespace(**r) for r in built.rows[1:]])


async def _schedule(ctx: ServiceContext, unit: AsyncUnit, custodian: str, today, country, row):
    """The parsed schedule in force for `custodian` (`ScheduleCache.in_force`'s answer): from the
    row read in the first round trip when the country used there is the custodian's and the
    document is parsed already, else through the sync cache in a worker thread (its own session)."""
    sc = ctx.runtime.schedules
    if row is not ... and country is not None and sc.known_countries().get(custodian) == country:
        if row is None:
            return None
        parsed = sc.parsed(row.id)
        if parsed is not None:
            return parsed

    def load():
        with ctx.runtime.sessions() as session:
            return sc.in_force(session, custodian, today)[1]
    return await to_thread.run_sync(load)


@lru_cache(maxsize=16)
def _first(country: str | None, today, with_id: bool) -> Compiled:
    """The statements sent with BEGIN (parameters `pid`, `dose_id`): the patient FOR KEY SHARE,
    its doses, the schedule row in force when `country` is known, whether the dose id is taken.
    Built once per country and day (the schedule's date and country are in the statement)."""
    pid = bindparam("pid", type_=patients.PATIENTS.c.id.type)
    parts = [select(patients.PATIENTS).where(patients.PATIENTS.c.id == pid).with_for_update(read=True, key_share=True),
             select(DOSES).where(DOSES.c.patient_id == pid).order_by(DOSES.c.date_given, DOSES.c.vaccine, DOSES.c.dose_number)]
    if country is not None:
        custodian = select(patients.PATIENTS.c.custodian).where(patients.PATIENTS.c.id == pid).scalar_subquery()
        parts.append(schedules.in_force_statement(custodian, country, today))
    if with_id:
        parts.append(select(DOSES.c.id).where(DOSES.c.id == bindparam("dose_id", type_=DOSES.c.id.type)))
    compiled = [Compiled.of(q) for q in parts]
    defaults = {}
    for c in compiled:
        clash = set(defaults) & set(c.defaults)
        assert all(defaults[k] == c.defaults[k] for k in clash), clash
        defaults.update(c.defaults)
    return Compiled("; ".join(c.sql for c in compiled), defaults, frozenset())


_DOSES_OF = Compiled.of(select(DOSES).where(DOSES.c.patient_id == bindparam("patient_id", type_=DOSES.c.patient_id.type))
                        .order_by(DOSES.c.date_given, DOSES.c.vaccine, DOSES.c.dose_number))
_RENUMBER = Compiled.of(update(DOSES).where(DOSES.c.id == bindparam("dose_id", type_=DOSES.c.id.type),
                                            DOSES.c.dose_number_inferred.is_(True))
                        .values(dose_number=bindparam("number", type_=DOSES.c.dose_number.type),
                                updated_at=bindparam("now", type_=DOSES.c.updated_at.type)))


@lru_cache(maxsize=64)
def _write(columns: tuple[str, ...], n: int) -> Compiled:
    """The dose rows (parameters `d<i>_<column>`), the dirty-patient mark (`p_id`) and the audit event."""
    doses = insert(DOSES).values([{c: bindparam(f"d{i}_{c}", type_=DOSES.c[c].type) for c in columns} for i in range(n)]).cte("d")
    dirty = insert(DIRTY).values(patient_id=bindparam("p_id", type_=DIRTY.c.patient_id.type)).cte("dp")
    return Compiled.of(async_events.after([doses, dirty]))
