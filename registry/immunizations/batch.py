"""Recording many doses at once (batch sync, FHIR Bundles): the outcome of calling
`service.record` on each item in order, computed against one snapshot and written set-based.

Invariants (the same as `service.record`, item by item):
- Each item gets the outcome `record` would give it after the items before it: the patient must
  exist and be in capture or search scope (a visiting child is flagged `outside_capture_scope`),
  the caller must be bound to a facility, a client id already in the registry (or taken by an
  earlier item) is a conflict, and the dose passes `validation.judge` against the patient's
  doses in the database plus the doses accepted earlier in the same call.
- Audit: a refused item writes exactly the refusal event `record` writes (through
  `trail.record`, so the unit of work replays it after a rollback); an accepted item writes the
  same success event. Nothing else of a refused item is written.
- Writing: the accepted doses, their coverage-queue marks and their success events are written
  by `write`, one multi-row insert per table (on PostgreSQL all of them, and the caller's own
  rows such as the sync receipts, one statement: `bulk.writer.insert_many`), in the caller's
  transaction; the caller then calls `written` (the trail's bookkeeping). Encryption is
  `service.record`'s (same cipher, table, column, row id and custodian), so a dose written here
  reads, corrects and voids like one written by the single route.
- Reading: one snapshot (`_snapshot`: the patients with their scope columns, the doses the
  judgement reads (`_reads`: the series of the vaccines in the call; a child's whole history only
  when one of its doses gets an inferred number), and which client ids are taken), one round trip
  on PostgreSQL (the patients' locks pipelined with the read); scope is decided by
  `patients.repository.access_to` (registry/scoping.py), as `reachable` decides it.
- Refusal events are written as the items are judged, success events only by `write`: a caller
  that falls back to the single path (a concurrent writer won a race) discards the plan.
- The judgement (`judge`) does no I/O of its own: it takes the snapshot, the schedules and a
  `refuse` callback for the refusal events, so the batch upload on the event loop
  (registry/sync/batch_async.py) reads and writes on its own connection and calls the same code.
"""

from __future__ import annotations

import uuid
from collections import namedtuple
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace

from sqlalchemy import select

from registry.bulk.writer import insert_many, rows_by_ids
from registry.clock import local_today
from registry.context import ServiceContext
from registry.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound
from registry.immunizations import intake, validation
from registry.immunizations.models import Immunization
from registry.immunizations.repository import set_inferred_numbers
from registry.immunizations.schemas import DoseCreate, DoseView
from registry.immunizations.service import not_done_detail, override_detail, to_view
from registry.patients.models import Patient
from registry.patients.repository import Access, access_to, lock_for_doses_sql
from registry.patients.service import NOT_FOUND, Merged
from registry.reports.models import DirtyPatient
from security.audit import event_mac
from security.audit import trail as audit
from security.audit.models import AuditEventRow
from security.audit.trail import PatientRef

ACTION = "immunization.create"
P, D = Patient.__table__, Immunization.__table__
_Patient = namedtuple("_Patient", ("id", "custodian", "province", "district", "home_facility", "birth_date", "sex",
                                   "merged_into"))
_Dose = namedtuple("_Dose", ("id", "patient_id", "vaccine", "dose_number", "date_given", "status", "dose_number_inferred"))


@dataclass
class Recorded:
    """An accepted item: the dose row to write and what the view needs."""

    row: dict
    verdict: validation.Verdict
    outside: bool
    parts: list[dict] = field(default_factory=list)  # component rows of a combination product

    def view(self, ctx: ServiceContext) -> DoseView:
        return to_view(ctx, SimpleNamespace(**self.row), (self.verdict.validity, self.verdict.rule),
                       [SimpleNamespace(**r) for r in self.parts])


@dataclass
class Plan:
    outcomes: list[Recorded | DomainError] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    renumbered: dict = field(default_factory=dict)  # inferred dose numbers of doses already in the registry

    @property
    def accepted(self) -> list[Recorded]:
        return [o for o in self.outcomes if isinstance(o, Recorded)]


def plan(ctx: ServiceContext, items: list[tuple[uuid.UUID, DoseCreate]], *, stop_on_error: bool = False) -> Plan:
    """Judge every (patient id, dose) in order; refusals are audited now, nothing else is written.
    With `stop_on_error` the items after the first refusal are not judged (a FHIR transaction)."""
    session = ctx.session
    vaccines, whole = _reads(items)
    patients, doses, taken = _snapshot(session, list(dict.fromkeys(pid for pid, _ in items)),
                                       [d.id for _, d in items if d.id is not None], vaccines, whole)
    today, schedules = local_today(), {}

    def schedule_of(custodian: str):
        if custodian not in schedules:
            schedules[custodian] = ctx.runtime.schedules.in_force(session, custodian, today)[1]
        return schedules[custodian]

    def refuse(action: str, outcome: str, **event) -> None:
        ctx.trail.record(session, action, outcome, **event)

    return judge(ctx, items, patients, doses, taken, schedule_of, today, refuse, stop_on_error=stop_on_error)


def judge(ctx: ServiceContext, items: list[tuple[uuid.UUID, DoseCreate]], patients: dict, doses: dict, taken: set,
          schedule_of, today, refuse, *, stop_on_error: bool = False, born: dict | None = None) -> Plan:
    """The judgement of `plan`, without I/O: each item against the snapshot (`_snapshot`'s
    patients, doses, taken ids; `doses` and `taken` grow with the accepted items) and
    `schedule_of(custodian)`. A refusal's event goes to `refuse(action, outcome, **event)` (the
    sync path records it in the session; the event loop's path writes it with the others,
    registry/sync/batch_async.py). `born`: patients the caller creates in the same write
    (`new_patient`), id -> the position of the first item that sees them (the items before it
    were judged, on the sync path, before the patient was written: not found)."""
    now = datetime.now(UTC)
    out, renumbering = Plan(), []
    for position, (pid, data) in enumerate(items):
        prow = patients.get(pid) if born is None or born.get(pid, 0) <= position else None
        try:
            out.outcomes.append(_one(ctx, prow, pid, data, doses, taken, schedule_of, today, now, out, refuse))
        except DomainError as exc:
            out.outcomes.append(exc)
            if stop_on_error:
                break
            continue
        accepted = out.outcomes[-1]
        if any(row["dose_number_inferred"] for row in (accepted.row, *accepted.parts)):
            renumbering.append((pid, list(doses[pid])))  # the child's doses as `service.record` renumbers them
    _renumber(out, patients, renumbering, schedule_of, today)
    return out


def _renumber(out: Plan, patients, renumbering: list[tuple], schedule_of, today) -> None:
    """Inferred dose numbers as recording the items one by one leaves them: `service.record`
    renumbers a child's inferred doses after each dose whose number is inferred, from the doses
    recorded so far (not after a numbered dose, which leaves them as they were); `renumbering`
    is each such item's child with its doses then, in order."""
    new = {row["id"]: row for r in out.accepted for row in (r.row, *r.parts) if row["dose_number_inferred"]}
    numbers: dict[uuid.UUID, int] = {}  # dose id -> its number after the latest renumbering
    for pid, rows in renumbering:
        prow = patients[pid]
        view = [d._replace(dose_number=numbers[d.id]) if d.id in numbers else d for d in rows]
        numbers.update(validation.inferred_numbers(schedule_of(prow.custodian), prow, view, today))
    for dose_id, number in numbers.items():
        if dose_id in new:
            new[dose_id]["dose_number"] = number
        else:
            out.renumbered[dose_id] = number




def _reads(items) -> tuple[set[str], set[uuid.UUID]]:
    """What the judgement reads of the children's histories: the series of the vaccines the items
    count for (a series is one vaccine's doses: `validation.judge`, the duplicate rule and the
    fallback number look at nothing else), and the whole history of a child given a dose whose
    number is inferred (a dose with no number, a combination product's components), because
    `_renumber` then renumbers the child's inferred doses of every series, as `service.record` does."""
    vaccines: set[str] = set()
    whole: set[uuid.UUID] = set()
    for pid, data in items:
        try:
            code = intake.resolve(data)
        except InvalidInput:  # refused before any dose is read
            continue
        vaccines.add(code.vaccine)
        vaccines.update(code.counts_for)
        if code.dose_number is None or len(code.counts_for) > 1:
            whole.add(pid)
    return vaccines, whole


def _snapshot(session, pids: list[uuid.UUID], client_ids: list[uuid.UUID], vaccines: set[str], whole: set[uuid.UUID]):
    """The patients (with their scope columns), their doses of `vaccines` (every dose of the
    patients in `whole`) in `repository.for_patient`'s order, and which of `client_ids` are taken.
    On PostgreSQL one round trip: the patients' `FOR KEY SHARE` locks and the read, pipelined."""
    n = len(_Patient._fields)
    if not pids and not client_ids:
        return {}, {}, set()
    if session.get_bind().dialect.name == "postgresql":
        raw = session.connection().connection.driver_connection
        with raw.cursor() as locks, raw.cursor() as cur:
            with raw.pipeline():
                # the locks first: a concurrent merge commits before the read (then `merged_into` is
                # read) or waits for this transaction (issue 13); the read's snapshot is taken after them
                for sql, params in lock_for_doses_sql(pids):
                    locks.execute(sql, params)
                cur.execute(PG_SNAPSHOT, snapshot_params(pids, client_ids, vaccines, whole))
            rows = cur.fetchall()
    else:
        rows = []
        for i in range(0, len(pids), 500):
            join = (D.c.patient_id == P.c.id) & (D.c.vaccine.in_(sorted(vaccines)) | P.c.id.in_(list(whole)))
            q = (select(*(P.c[c] for c in _Patient._fields), *(D.c[c] for c in _Dose._fields))
                 .select_from(P.outerjoin(D, join)).where(P.c.id.in_(pids[i:i + 500])))
            rows += [tuple(r) for r in session.execute(q)]
        rows += [(None,) * n + (r[0],) for r in rows_by_ids(session, D, ("id",), "id", client_ids)]
    return snapshot_of(rows)


def new_patient(row: dict) -> _Patient:
    """A patient the caller is writing (a registration of the same batch) as the snapshot reads it."""
    return _Patient(*(row.get(c) for c in _Patient._fields))


def snapshot_params(pids: list, client_ids: list, vaccines: set[str], whole: set[uuid.UUID]) -> dict:
    """`PG_SNAPSHOT`'s parameters."""
    return {"vaccines": sorted(vaccines), "whole": list(whole), "pids": pids, "client_ids": client_ids}


def snapshot_of(rows) -> tuple[dict, dict, set]:
    """`_snapshot`'s answer from the rows of `PG_SNAPSHOT` (or of its SQLite equivalent)."""
    n = len(_Patient._fields)
    patients: dict[uuid.UUID, _Patient] = {}
    doses: dict[uuid.UUID, list[_Dose]] = {}
    taken: set[uuid.UUID] = set()
    for r in rows:
        if r[0] is None:
            taken.add(r[n])
            continue
        if r[0] not in patients:
            patients[r[0]] = _Patient(*r[:n])
            doses[r[0]] = []
        if r[n] is not None:
            doses[r[0]].append(_Dose(*r[n:]))
    for mine in doses.values():
        mine.sort(key=lambda d: (d.date_given, d.vaccine, d.dose_number))
    return patients, doses, taken


# PostgreSQL: the snapshot's read (parameters: `snapshot_params`); also sent by the batch upload on
# the event loop in its first message (registry/sync/batch_async.py)
PG_SNAPSHOT = (
    f"SELECT {', '.join('p.' + c for c in _Patient._fields)}, {', '.join('d.' + c for c in _Dose._fields)}"
    f" FROM {P.name} p LEFT JOIN {D.name} d ON d.patient_id = p.id"
    f" AND (d.vaccine = ANY(%(vaccines)s::text[]) OR p.id = ANY(%(whole)s::uuid[])) WHERE p.id = ANY(%(pids)s::uuid[])"
    f" UNION ALL SELECT {', '.join(['NULL'] * len(_Patient._fields))}, i.id, {', '.join(['NULL'] * (len(_Dose._fields) - 1))}"
    f" FROM {D.name} i WHERE i.id = ANY(%(client_ids)s::uuid[])"
)


def _one(ctx, prow, pid, data: DoseCreate, doses, taken: set, schedule_of, today, now, out: Plan, refuse) -> Recorded:
    trail, principal = ctx.trail, ctx.principal
    if prow is None:
        refuse(ACTION, audit.NOT_FOUND, resource_id=pid)
        raise NotFound(NOT_FOUND)
    pref = PatientRef(prow.id, prow.province, prow.district)
    access = access_to(principal, prow)
    if access not in (Access.CAPTURE, Access.SEARCH):
        refuse(ACTION, audit.DENIED, resource_id=pid, patient=pref, outside_capture_scope=True)
        raise NotFound(NOT_FOUND)
    if prow.merged_into is not None:  # as `reachable`: a merged record takes no dose (issue 13)
        refuse(ACTION, audit.CONFLICT, resource_id=pid, patient=pref, detail={"reason": "merged"})
        raise Merged(prow.merged_into)
    facility = principal.facility
    if facility is None:
        refuse(ACTION, audit.DENIED, resource_type="Immunization", patient=pref,
                     detail={"reason": "not bound to a facility"})
        raise Forbidden("only staff bound to a facility can record or amend doses")
    dose_id = data.id or uuid.uuid4()
    if data.id is not None and dose_id in taken:
        refuse(ACTION, audit.CONFLICT, resource_type="Immunization", resource_id=dose_id, patient=pref)
        raise Conflict("a dose with this id already exists", field="id")
    try:
        built = intake.build(ctx.runtime.cipher, prow, data, dose_id, existing=lambda: doses[prow.id],
                             schedule=lambda: schedule_of(prow.custodian), today=today, now=now, facility=facility,
                             user_id=principal.user_id)
    except InvalidInput as exc:
        refuse(ACTION, audit.INVALID, resource_type="Immunization", patient=pref,
                     detail={"field": exc.field, "rule": getattr(exc, "code", None)})
        raise
    taken.add(dose_id)
    mine = doses[prow.id]
    mine += [_Dose(r["id"], prow.id, r["vaccine"], r["dose_number"], r["date_given"], r["status"], r["dose_number_inferred"])
             for r in built.rows]
    mine.sort(key=lambda d: (d.date_given, d.vaccine, d.dose_number))
    outside = access is not Access.CAPTURE
    detail = not_done_detail(data) or (override_detail(built.verdict) if data.administered_here else {"reported": True})
    out.events.append(trail.build(ACTION, audit.SUCCESS, resource_type="Immunization", resource_id=dose_id, patient=pref,
                                  outside_capture_scope=outside, detail=detail or None))
    return Recorded(built.row, built.verdict, outside, built.rows[1:])


def write(ctx: ServiceContext, p: Plan, also: list[tuple] = ()) -> None:
    """Write the accepted doses, their queue marks and success events, with the caller's own rows
    `also` ((table, rows, columns): the sync receipts), in one statement on PostgreSQL (raises the
    database's integrity error if a concurrent writer took an id: the caller decides what to do)."""
    accepted = p.accepted
    if not accepted:
        return
    session = ctx.session
    insert_many(session, [*dose_parts(p), (AuditEventRow.__table__, event_mac.sign_rows(session, p.events), None), *also])
    set_inferred_numbers(session, p.renumbered)


def dose_parts(p: Plan) -> list[tuple]:
    """`write`'s rows but the events, as `insert_many` parts: the accepted doses and their marks."""
    accepted = p.accepted
    return [
        (D, [row for r in accepted for row in (r.row, *r.parts)], None),
        # coverage aggregates: refreshed before the next report (one mark per dose, as `record`)
        (DirtyPatient.__table__, [{"patient_id": r.row["patient_id"]} for r in accepted], ("patient_id",)),
    ]


def written(ctx: ServiceContext, p: Plan) -> None:
    """The trail's bookkeeping for the success events, once `write` is committed (or final)."""
    for event in p.events:
        ctx.trail.written(event)
