"""The batch upload on the event loop (issue 17): `batch.upload` for a batch of `dose.record` and
`patient.create` items on the async unit of work (registry/async_unit.py), PostgreSQL only. Same
results, refusals, rows and audit events as the sync path (registry/sync/batch.py, whose
invariants hold here too); on SQLite, and for any other batch, `upload_async` runs
`batch.upload` in a worker thread.

Which batches (`fits_on_loop`, decided at the gate before the Idempotency-Key is claimed, so that
the key's stored response commits in the transaction of whichever path does the work): only
`dose.record` and `patient.create` items (malformed ones too: they are answered `rejected:
invalid` without I/O), no dose id and no patient id twice, at most `NHR_SYNC_BATCH_MAX_ITEMS`,
and a caller allowed to record doses (and to register patients, when the batch has a
registration). Corrections and voids take the sync path, one by one through the services.

Round trips (the sync path makes 5 or more for doses, about 15 for a campaign device's mix of
newborns and doses, each with a thread hand-off):
1. one message (`open_snapshot`, shared with the FHIR Bundle path): BEGIN, the registrations'
   advisory locks on their own identifiers, the patients' `FOR KEY SHARE` locks (the
   dose-vs-merge race, issue 13), the snapshot the judgement reads (`dose_batch.PG_SNAPSHOT`,
   after the locks, so its statement snapshot sees a merge that committed first; it reads the
   registrations' ids too: a taken client id), the items' receipts with their uploaders'
   facility (`repository.receipts`' visibility rule, without its second query), the schedule in
   force per custodian when the node's country is known, and the registrations' one read
   (registry/sync/batch_patients.py: identifiers, blocking keys, birth facilities). Client-side
   bound, as `AsyncUnit.begin` always is;
2. one statement: the new patients with their blind-index rows, access codes, report-queue
   marks, blocking keys and candidate pairs; the doses and their marks; every audit event of the
   request (each item's refusal or success event and the `sync.batch` event, with their
   subjects), the receipts, and the renumbering of inferred doses already on record
   (`bulk.writer.insert_many_sql`);
3. the stored response of an Idempotency-Key and COMMIT, by the unit of work.

The judgement, in the sync path's order: the registrations first (`batch_patients.judge`: each
against the snapshot and the batch's earlier registrations, as the sync path sees them written),
then the doses in one `dose_batch.judge` call on the snapshot plus the new patients, each new
patient seen only by the doses after its registration (`born`). A concurrent upload that wrote
one of the ids first makes the write fail on its unique key: the transaction is rolled back
and the request is judged again on a new snapshot (where that id is now `duplicate` or taken),
as the sync path falls back to the single-record route for the run. Refusal events are booked on
the trail only once their attempt is final, so the unit of work writes them again after a
rollback exactly once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from types import SimpleNamespace

import psycopg
from anyio import to_thread

from registry import errors as e
from registry.async_database import Compiled
from registry.async_unit import AsyncUnit
from registry.bulk.writer import _JSON, insert_many_sql
from registry.citizens.repository import CODES
from registry.clock import local_today
from registry.context import ServiceContext
from registry.immunizations import batch as dose_batch
from registry.immunizations.repository import DOSES
from registry.linkage import repository as linkage_repo
from registry.linkage import service as linkage
from registry.patients import async_register as reg
from registry.patients.repository import PATIENTS
from registry.schedules.models import ScheduleRow
from registry.sync import batch, batch_patients
from registry.sync import repository as repo
from registry.sync.schemas import BatchResult, DoseItem, ItemResult, PatientItem
from registry.sync.upload_refusals import Raced, Refusals, refusals_booked
from registry.users.models import User
from security.access.permissions import Permission
from security.audit import trail as audit
from security.audit.models import AuditEventRow, AuditEventSubjectRow

ATTEMPTS = 3  # judged again after a concurrent upload took one of the ids; then 409, resend
ON_LOOP_ITEMS = 8  # a batch of more doses is judged in a worker thread (`_decide`)
_EVENTS, _SUBJECTS = AuditEventRow.__table__, AuditEventSubjectRow.__table__
_SCHEDULES, _USERS = ScheduleRow.__table__, User.__table__


def fits_on_loop(items: object, principal, limit: int) -> bool:
    """Whether a batch (the request's JSON `items`, not yet validated) is one `_upload` answers
    exactly as `batch.upload` would: see the module docstring. Anything else: the sync path."""
    if not isinstance(items, list) or not items or len(items) > limit or not principal.can(Permission.IMMUNIZATION_RECORD):
        return False
    ids = {op: set() for op in _ON_LOOP}
    for raw in items:
        op = raw.get("op") if isinstance(raw, dict) else None
        if op not in _ON_LOOP or (op == "patient.create" and not principal.can(Permission.PATIENT_CREATE)):
            return False
        data = raw.get("data")
        try:
            record_id = uuid.UUID(str(data.get("id"))) if isinstance(data, dict) and data.get("id") is not None else None
        except ValueError:
            continue  # refused `invalid` by `batch._parse`
        if record_id is not None:
            if record_id in ids[op]:
                return False  # a repeated id sees its first occurrence's receipt: two runs, the sync path
            ids[op].add(record_id)
    return True


_ON_LOOP = ("dose.record", "patient.create")


async def upload_async(ctx: ServiceContext, items: list[dict]) -> BatchResult:
    if ctx.unit is None:
        return await to_thread.run_sync(batch.upload, ctx, items)
    for _ in range(ATTEMPTS):
        try:
            return await _upload(ctx, ctx.unit, items)
        except Raced:
            await ctx.unit.rollback()
    raise e.Conflict("concurrent uploads wrote the same records; resend the batch to see their state", field="items")


@dataclass
class Snapshot:
    """What `open_snapshot` read: the judgement's patients, doses and taken ids (`dose_batch`'s
    snapshot), the receipts' rows, the schedule in force per custodian, the rows of the caller's
    own statements (`after`), and today's date."""

    patients: dict
    doses: dict
    taken: set
    receipts: list
    schedules: dict
    more: list
    today: object


async def open_snapshot(ctx: ServiceContext, unit: AsyncUnit, pairs: list, *, record_ids: list | None = None,
                        also_pids: list = (), custodians: set = frozenset(), before: tuple[Compiled, dict] | None = None,
                        after: tuple[list[Compiled], dict] = ((), {})) -> Snapshot:
    """The first message of an upload on the event loop (the batch upload, the FHIR Bundle):
    BEGIN; the caller's `before` statement (the registrations' advisory locks); the `FOR KEY
    SHARE` locks of the patients of `pairs` ((patient id, dose) each); the judgement's snapshot
    (`dose_batch.PG_SNAPSHOT`, also reading the patients `also_pids`); with `record_ids` the
    receipts of those ids (kinds dose and patient, with their uploaders' facility); the schedule
    in force per custodian when the node's country is known; then the caller's `after` statements.
    Then the schedules of the patients' custodians and of `custodians` (`_schedules`)."""
    pids = list(dict.fromkeys(pid for pid, _ in pairs))
    client_ids = [d.id for _, d in pairs if d.id is not None]
    vaccines, whole = dose_batch._reads(pairs)
    today = local_today()
    countries = set(ctx.runtime.schedules.known_countries().values())
    country = countries.pop() if len(countries) == 1 else None
    statements = ([before[0]] if before else []) + [_PLAIN_LOCKS, _PLAIN_SNAPSHOT] + (
        [_PLAIN_RECEIPTS] if record_ids is not None else []) + ([_PLAIN_IN_FORCE] if country is not None else []) + list(after[0])
    values = {**(before[1] if before else {}), **after[1], "lock_ids": sorted(set(pids), key=str),
              **dose_batch.snapshot_params(list(dict.fromkeys([*pids, *also_pids])), client_ids, vaccines, whole),
              "record_ids": record_ids or [], "kinds": list(_ON_LOOP_KINDS), "country": country, "today": today,
              "custodians": sorted(custodians)}
    sets = await unit.begin(_joined(tuple(statements)), values, plain_rows=True)
    sets = sets[1:] if before else sets
    patients, doses, taken = dose_batch.snapshot_of(sets[1])
    receipts = sets[2] if record_ids is not None else []
    rest = sets[2 + (record_ids is not None):]
    in_force = {r[0]: r[1] for r in rest[0]} if country is not None else {}
    more = rest[1:] if country is not None else rest
    schedules = await _schedules(ctx, {p.custodian for p in patients.values()} | set(custodians), today, country, in_force)
    return Snapshot(patients, doses, taken, receipts, schedules, more, today)


async def _upload(ctx: ServiceContext, unit: AsyncUnit, items: list[dict]) -> BatchResult:
    principal, trail = ctx.principal, ctx.trail
    parsed = [(index, batch._parse(index, raw)) for index, raw in enumerate(items)]
    run = [(index, item) for index, item in parsed if isinstance(item, DoseItem)]
    pending = await batch_patients.prepare(ctx, [(i, item) for i, item in parsed if isinstance(item, PatientItem)])
    batch_patients.draw_health_ids(pending)
    pairs = [(item.patient_id, item.data) for _, item in run]
    refuse = Refusals(trail)
    refusals, refusal_subjects = refuse.rows, refuse.subjects

    with refusals_booked(trail, refusals, refusal_subjects):
        before, after = None, ((), {})
        if pending:
            locks, lock_values, reads, read_values = batch_patients.statements(ctx, pending)
            before = (locks, lock_values) if locks is not None else None
            after = (reads, read_values)
        snap = await open_snapshot(ctx, unit, pairs, record_ids=[item.data.id for _, item in run] + [p.id for p in pending],
                                   also_pids=[p.id for p in pending], custodians={principal.scope.province} if pending else set(),
                                   before=before, after=after)
        seen = {(r[0], r[1]): r[1:] for r in snap.receipts
                if r[4] == principal.user_id or (principal.facility and r[5] == principal.facility)}
        model = None
        if batch_patients.needs_model(pending):
            model = linkage.models.cached() or await reg._model(ctx.runtime)
        decide = partial(_decide, ctx, unit.db.event_mac, items, parsed, run, pending, seen, snap, model, refuse,
                         refusals, refusal_subjects)
        # the judgement is CPU (tens of ms for a batch of children with long histories, an argon2id
        # hash a registration): in a worker thread past a few items or with a registration, so
        # that the event loop goes on serving the other requests meanwhile
        try:
            results, counts, plan, registered, event, subject_rows, sql, params = (
                decide() if len(run) <= ON_LOOP_ITEMS and not pending else await to_thread.run_sync(decide))
        except batch_patients.Retry as exc:
            raise Raced() from exc
        await _write(unit, sql, params)
    dose_batch.written(ctx, plan)
    for r in registered:
        trail.written(r.event, [])
    trail.written(event, subject_rows)
    return BatchResult(results=results, **counts)


def _decide(ctx: ServiceContext, event_mac, items, parsed, run, pending, seen, snap: Snapshot, model, refuse,
            refusals: list[dict], refusal_subjects: dict):
    """Everything of `_upload` between the reads and the write, without I/O: the receipts' answers,
    the registrations (`batch_patients.judge`) and the doses (`dose_batch.judge`) in the order the
    sync path judges them, their refusal events going to `refuse` (which appends them to
    `refusals`), the results, the events (MACed) and the write's statement."""
    principal, trail = ctx.principal, ctx.trail
    out: dict[int, tuple[ItemResult, uuid.UUID | None]] = {}
    patients, receipts = snap.patients, []
    registered, unused = [], []
    if pending:
        existing = set(patients)
        reg_seen = {k[1]: repo._Receipt(*v[:3]) for k, v in seen.items() if k[0] == "patient"}
        pool = pool_rows(snap)
        reg_out, registered, reg_receipts = batch_patients.judge(
            ctx, pending, reg_seen, existing, snap.more[0], {r[0] for r in snap.more[1]}, model, refuse, pool)
        unused = [vars(r) for r in pool]  # put back unissued
        out.update(reg_out)
        receipts += reg_receipts.values()
        patients = with_registered(snap, registered)
    todo, macs = [], {}
    for index, item in run:
        macs[index] = mac = batch._mac(ctx, item)
        if ("dose", item.data.id) in seen:
            out[index] = batch._seen(ctx, index, item, repo._Receipt(*seen["dose", item.data.id][:3]), mac, refuse)
        else:
            todo.append((index, item))
    # a patient registered by this batch exists for the doses after its registration only
    born = {r.row["id"]: sum(i < index for i, _ in todo) for index, r in zip(
        [one.index for one in pending if out[one.index][0].result == "created"], registered)}
    plan = dose_batch.judge(ctx, [(item.patient_id, item.data) for _, item in todo], patients, snap.doses, snap.taken,
                            snap.schedules.__getitem__, snap.today, refuse, born=born)
    now = datetime.now(UTC)
    for receipt in receipts:
        receipt["received_at"] = now
    for (index, item), res in zip(todo, plan.outcomes):
        base = {"index": index, "op": item.op, "id": item.data.id}
        if isinstance(res, e.DomainError):
            out[index] = ItemResult(**base, result="rejected", **batch._reason(res)), None
            continue
        out[index] = ItemResult(**base, result="created", version=res.row["version"]), res.row["patient_id"]
        receipts.append({"kind": "dose", "record_id": item.data.id, "content_mac": macs[index],
                         "result_id": item.data.id, "user_id": principal.user_id, "received_at": now})
    answered = [out[index] if isinstance(item, (DoseItem, PatientItem)) else item for index, item in parsed]
    results, patient_of = [r for r, _ in answered], [pid for _, pid in answered]
    subjects = list(dict.fromkeys(pid for r, pid in zip(results, patient_of) if pid is not None and r.result != "rejected"))
    counts = {k: sum(r.result == k for r in results) for k in ("created", "duplicate", "rejected")}
    event = trail.build(batch.ACTION, audit.SUCCESS, resource_type="Bundle", detail={"items": len(items), **counts})
    subject_rows = [{"event_id": event["id"], "patient_id": s} for s in subjects]
    events = [*refusals, *(r.event for r in registered), *plan.events, event]
    for row in events:
        of = subjects if row is event else [s["patient_id"] for s in refusal_subjects.get(row["id"], ())]
        row["mac"] = event_mac.tag(row, of) if event_mac is not None else None
    extra = [(_RENUMBER, [now, _JSON.encode([{"id": k, "n": v} for k, v in plan.renumbered.items()])])] \
        if plan.renumbered else []
    all_subjects = [*(s for rows in refusal_subjects.values() for s in rows), *subject_rows]
    parts = [(t, rows, cols) for t, rows, cols in [*registration_parts(registered), *dose_batch.dose_parts(plan),
                                                     (_EVENTS, events, None), (_SUBJECTS, all_subjects, None),
                                                     (repo.RECEIPTS, receipts, None),
                                                     (batch_patients.POOL, unused, batch_patients.POOL_COLUMNS)]
             if rows]
    return results, counts, plan, registered, event, subject_rows, *insert_many_sql(parts, extra)


def pool_rows(snap: Snapshot) -> list:
    """The access-code pool rows `batch_patients.statements` took, oldest first."""
    rows = sorted(snap.more[2], key=lambda r: r[0]) if len(snap.more) > 2 else []
    return [SimpleNamespace(**dict(zip(batch_patients.POOL_COLUMNS, r))) for r in rows]


def with_registered(snap: Snapshot, registered: list) -> dict:
    """The snapshot's patients plus the accepted registrations (no dose yet), for `dose_batch.judge`."""
    patients = dict(snap.patients)
    for r in registered:
        patients[r.row["id"]] = dose_batch.new_patient(r.row)
        snap.doses[r.row["id"]] = []
    return patients


def registration_parts(registered: list) -> list[tuple]:
    """The accepted registrations' rows as `insert_many` parts, the patients first (async_register's write)."""
    if not registered:
        return []
    return [(PATIENTS, [r.row for r in registered], tuple(registered[0].row)),
            (reg.INDEX, [x for r in registered for x in r.index_rows], reg._INDEX_COLS),
            (CODES, [r.code for r in registered], reg._CODE_COLS),
            (reg.DIRTY, [{"patient_id": r.row["id"]} for r in registered], ("patient_id",)),
            (linkage_repo.KEYS, [k for r in registered for k in r.keys], reg._KEY_COLS),
            (linkage_repo.CANDIDATES, [c for r in registered for c in r.pairs], reg._PAIR_COLS)]


async def _write(unit: AsyncUnit, sql: str, params: list) -> None:
    try:
        await unit._run(unit.lease.conn.execute(sql, params))
    except psycopg.errors.UniqueViolation as exc:
        raise Raced() from exc


async def _schedules(ctx: ServiceContext, custodians: set[str], today, country: str | None, in_force: dict) -> dict:
    """custodian -> parsed schedule in force (`ScheduleCache.in_force`'s answer): from the rows
    read in the first round trip when the custodian's country is the one used there and the
    document is parsed already, else through the sync cache in a worker thread (once per process
    and schedule)."""
    sc = ctx.runtime.schedules
    known = sc.known_countries()
    out, missing = {}, []
    for custodian in custodians:
        if country is not None and known.get(custodian) == country and custodian in in_force:
            row_id = in_force[custodian]
            parsed = sc.parsed(row_id) if row_id is not None else None
            if row_id is None or parsed is not None:
                out[custodian] = parsed
                continue
        missing.append(custodian)
    if missing:
        def load():
            with ctx.runtime.sessions() as session:
                return {c: sc.in_force(session, c, today)[1] for c in missing}
        out.update(await to_thread.run_sync(load))
    return out


_LOCKS = f"SELECT id FROM {PATIENTS.name} WHERE id = ANY(%(lock_ids)s::uuid[]) ORDER BY id FOR KEY SHARE"
_ON_LOOP_KINDS = ("dose", "patient")
_RECEIPTS = (f"SELECT r.kind, r.record_id, r.content_mac, r.result_id, r.user_id, u.facility_code FROM {repo.RECEIPTS.name} r"
             f" LEFT JOIN {_USERS.name} u ON u.id = r.user_id"
             f" WHERE r.record_id = ANY(%(record_ids)s::uuid[]) AND r.kind = ANY(%(kinds)s::text[])")
# `schedules.repository.in_force_statement` for each custodian of the batch's patients and `custodians`
_IN_FORCE = (f"SELECT c.custodian, s.id FROM (SELECT custodian FROM {PATIENTS.name} WHERE id = ANY(%(pids)s::uuid[])"
             f" UNION SELECT unnest(%(custodians)s::text[])) c LEFT JOIN LATERAL (SELECT t.id FROM {_SCHEDULES.name} t"
             f" WHERE t.jurisdiction_code IN (c.custodian, %(country)s) AND t.effective_from <= %(today)s"
             f" ORDER BY (t.jurisdiction_code = c.custodian) DESC, t.effective_from DESC, t.loaded_at DESC LIMIT 1) s ON true")
# `immunizations.repository.set_inferred_numbers`, as a CTE of the write
_RENUMBER = (f"UPDATE {DOSES.name} SET dose_number = r.n, updated_at = %s FROM json_to_recordset(%s::json) AS r(id uuid, n int)"
             f" WHERE {DOSES.name}.id = r.id AND {DOSES.name}.dose_number_inferred")
_PLAIN_LOCKS, _PLAIN_SNAPSHOT, _PLAIN_RECEIPTS, _PLAIN_IN_FORCE = (
    Compiled(sql, {}, frozenset()) for sql in (_LOCKS, dose_batch.PG_SNAPSHOT, _RECEIPTS, _IN_FORCE))


_JOINED: dict[tuple[str, ...], Compiled] = {}


def _joined(statements: tuple[Compiled, ...]) -> Compiled:
    """The statements as one message (`AsyncUnit.begin`); their literals' parameter names must not clash."""
    key = tuple(c.sql for c in statements)
    if key not in _JOINED:
        _JOINED[key] = _join(statements)
    return _JOINED[key]


def _join(statements: tuple[Compiled, ...]) -> Compiled:
    defaults, json_params = {}, frozenset()
    for c in statements:
        assert not set(c.defaults) & set(defaults), "parameter names clash"
        defaults.update(c.defaults)
        json_params |= c.json_params
    return Compiled("; ".join(c.sql for c in statements), defaults, json_params)
