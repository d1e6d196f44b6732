"""The batch upload on the event loop (issue 17): `batch.upload` for a batch of `dose.record`
items on the async unit of work (registry/async_unit.py), PostgreSQL only. Same results, refusals,
rows and audit events as the sync path (registry/sync/batch.py, whose invariants hold here too);
on SQLite, and for any other batch, `upload_async` runs `batch.upload` in a worker thread.

Which batches (`fits_on_loop`, decided at the gate before the Idempotency-Key is claimed, so that
the key's stored response commits in the transaction of whichever path does the work): only
`dose.record` items (malformed ones too: they are answered `rejected: invalid` without I/O), no
dose id twice, at most `NHR_SYNC_BATCH_MAX_ITEMS`, and a caller allowed to record doses. Patients,
corrections and voids take the sync path, one by one through the services, as before.

Round trips (the sync path makes 5 or more, each with a thread hand-off):
1. one message: BEGIN, the patients' `FOR KEY SHARE` locks (the dose-vs-merge race, issue 13),
   the snapshot the judgement reads (`dose_batch.PG_SNAPSHOT`, after the locks, so its statement
   snapshot sees a merge that committed first), the items' receipts with their uploaders'
   facility (`repository.receipts`' visibility rule, without its second query), and the
   schedule in force per custodian when the node's country is known. Client-side bound, as
   `AsyncUnit.begin` always is;
2. one statement: the doses, their report-queue marks, every audit event of the request (each
   item's refusal or success event and the `sync.batch` event, with its subjects), the receipts,
   and the renumbering of inferred doses already on record (`bulk.writer.insert_many_sql`);
3. the stored response of an Idempotency-Key and COMMIT, by the unit of work.

The judgement is one call, `dose_batch.judge`, on the snapshot. A concurrent upload that wrote
one of the ids first makes the write fail on its unique key: the transaction is rolled back
and the request is judged again on a new snapshot (where that id is now `duplicate` or taken),
as the sync path falls back to the single-record route for the run. Refusal events are booked on
the trail only once their attempt is final, so the unit of work writes them again after a
rollback exactly once.
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial

import psycopg
from anyio import to_thread

from registry import errors as e
from registry.async_database import Compiled
from registry.async_unit import AsyncUnit
from registry.bulk.writer import _JSON, insert_many_sql
from registry.clock import local_today
from registry.context import ServiceContext
from registry.immunizations import batch as dose_batch
from registry.immunizations.repository import DOSES
from registry.patients.repository import PATIENTS
from registry.schedules.models import ScheduleRow
from registry.sync import batch
from registry.sync import repository as repo
from registry.sync.schemas import BatchResult, DoseItem, ItemResult
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
    ids = set()
    for raw in items:
        if not isinstance(raw, dict) or raw.get("op") != "dose.record":
            return False
        data = raw.get("data")
        try:
            dose_id = uuid.UUID(str(data.get("id"))) if isinstance(data, dict) and data.get("id") is not None else None
        except ValueError:
            continue  # refused `invalid` by `batch._parse`
        if dose_id is not None:
            if dose_id in ids:
                return False  # a repeated id sees its first occurrence's receipt: two runs, the sync path
            ids.add(dose_id)
    return True


async def upload_async(ctx: ServiceContext, items: list[dict]) -> BatchResult:
    if ctx.unit is None:
        return await to_thread.run_sync(batch.upload, ctx, items)
    for _ in range(ATTEMPTS):
        try:
            return await _upload(ctx, ctx.unit, items)
        except _Raced:
            await ctx.unit.rollback()
    raise e.Conflict("concurrent uploads wrote the same records; resend the batch to see their state", field="items")


class _Raced(Exception):
    """A concurrent writer took one of the ids between the snapshot and the write."""


@contextmanager
def refusals_booked(trail, refusals: list[dict]):
    """The trail's bookkeeping of the refusal events an upload built (`trail.build`) and writes
    with its data: booked as written when the block ends, and also when it fails, since the unit
    of work writes them again after its rollback; not when a concurrent writer raced the upload
    (`_Raced`: it is judged again, and this attempt's refusals are not its answer)."""
    try:
        yield
    except _Raced:
        raise
    except BaseException:
        for row in refusals:
            trail.written(row)
        raise
    for row in refusals:
        trail.written(row)


async def _upload(ctx: ServiceContext, unit: AsyncUnit, items: list[dict]) -> BatchResult:
    principal, trail = ctx.principal, ctx.trail
    parsed = [(index, batch._parse(index, raw)) for index, raw in enumerate(items)]
    run = [(index, item) for index, item in parsed if isinstance(item, DoseItem)]
    pairs = [(item.patient_id, item.data) for _, item in run]
    pids = list(dict.fromkeys(pid for pid, _ in pairs))
    client_ids = [d.id for _, d in pairs]
    vaccines, whole = dose_batch._reads(pairs)
    today = local_today()
    sc = ctx.runtime.schedules
    countries = set(sc.known_countries().values())
    country = countries.pop() if len(countries) == 1 else None
    refusals: list[dict] = []

    def refuse(action: str, outcome: str, **event) -> None:
        refusals.append(trail.build(action, outcome, **event))

    with refusals_booked(trail, refusals):
        sets = await unit.begin(_first(country is not None), {
            "lock_ids": sorted(set(pids), key=str), **dose_batch.snapshot_params(pids, client_ids, vaccines, whole),
            "record_ids": client_ids, "kind": "dose", "country": country, "today": today}, plain_rows=True)
        patients, doses, taken = dose_batch.snapshot_of(sets[1])
        seen = {r[0]: r for r in sets[2]
                if r[3] == principal.user_id or (principal.facility and r[4] == principal.facility)}
        in_force = {r[0]: r[1] for r in sets[3]} if country is not None else {}
        schedules = await _schedules(ctx, {p.custodian for p in patients.values()}, today, country, in_force)

        decide = partial(_decide, ctx, unit.db.event_mac, items, parsed, run, seen, patients, doses, taken, schedules,
                         today, refuse, refusals)
        # the judgement is CPU (tens of ms for a batch of children with long histories): in a worker
        # thread past a few items, so that the event loop goes on serving the other requests meanwhile
        results, counts, plan, event, subject_rows, sql, params = (
            decide() if len(run) <= ON_LOOP_ITEMS else await to_thread.run_sync(decide))
        await _write(unit, sql, params)
    dose_batch.written(ctx, plan)
    trail.written(event, subject_rows)
    return BatchResult(results=results, **counts)


def _decide(ctx: ServiceContext, event_mac, items, parsed, run, seen, patients, doses, taken, schedules, today, refuse,
            refusals: list[dict]):
    """Everything of `_upload` between the reads and the write, without I/O: the receipts' answers,
    the judgement (`dose_batch.judge`, its refusal events going to `refuse`, which appends them to
    `refusals`), the results, the events (MACed) and the write's statement."""
    principal, trail = ctx.principal, ctx.trail
    out: dict[int, tuple[ItemResult, uuid.UUID | None]] = {}
    todo, macs = [], {}
    for index, item in run:
        macs[index] = mac = batch._mac(ctx, item)
        if item.data.id in seen:
            out[index] = batch._seen(ctx, index, item, repo._Receipt(*seen[item.data.id][:3]), mac, refuse)
        else:
            todo.append((index, item))
    plan = dose_batch.judge(ctx, [(item.patient_id, item.data) for _, item in todo], patients, doses, taken,
                            schedules.__getitem__, today, refuse)
    now = datetime.now(UTC)
    receipts = []
    for (index, item), res in zip(todo, plan.outcomes):
        base = {"index": index, "op": item.op, "id": item.data.id}
        if isinstance(res, e.DomainError):
            out[index] = ItemResult(**base, result="rejected", **batch._reason(res)), None
            continue
        out[index] = ItemResult(**base, result="created", version=res.row["version"]), res.row["patient_id"]
        receipts.append({"kind": "dose", "record_id": item.data.id, "content_mac": macs[index],
                         "result_id": item.data.id, "user_id": principal.user_id, "received_at": now})
    answered = [out[index] if isinstance(item, DoseItem) else item for index, item in parsed]
    results, patient_of = [r for r, _ in answered], [pid for _, pid in answered]
    subjects = list(dict.fromkeys(pid for r, pid in zip(results, patient_of) if pid is not None and r.result != "rejected"))
    counts = {k: sum(r.result == k for r in results) for k in ("created", "duplicate", "rejected")}
    event = trail.build(batch.ACTION, audit.SUCCESS, resource_type="Bundle", detail={"items": len(items), **counts})
    subject_rows = [{"event_id": event["id"], "patient_id": s} for s in subjects]
    events = [*refusals, *plan.events, event]
    for row in events:
        row["mac"] = event_mac.tag(row, subjects if row is event else ()) if event_mac is not None else None
    extra = [(_RENUMBER, [now, _JSON.encode([{"id": k, "n": v} for k, v in plan.renumbered.items()])])] \
        if plan.renumbered else []
    parts = [(t, rows, cols) for t, rows, cols in [*dose_batch.dose_parts(plan), (_EVENTS, events, None),
                                                     (_SUBJECTS, subject_rows, None), (repo.RECEIPTS, receipts, None)]
             if rows]
    return results, counts, plan, event, subject_rows, *insert_many_sql(parts, extra)


async def _write(unit: AsyncUnit, sql: str, params: list) -> None:
    try:
        await unit._run(unit.lease.conn.execute(sql, params))
    except psycopg.errors.UniqueViolation as exc:
        raise _Raced() from exc


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
_RECEIPTS = (f"SELECT r.record_id, r.content_mac, r.result_id, r.user_id, u.facility_code FROM {repo.RECEIPTS.name} r"
             f" LEFT JOIN {_USERS.name} u ON u.id = r.user_id"
             f" WHERE r.record_id = ANY(%(record_ids)s::uuid[]) AND r.kind = %(kind)s")
# `schedules.repository.in_force_statement` for each custodian of the batch's patients
_IN_FORCE = (f"SELECT c.custodian, s.id FROM (SELECT DISTINCT custodian FROM {PATIENTS.name}"
             f" WHERE id = ANY(%(pids)s::uuid[])) c LEFT JOIN LATERAL (SELECT t.id FROM {_SCHEDULES.name} t"
             f" WHERE t.jurisdiction_code IN (c.custodian, %(country)s) AND t.effective_from <= %(today)s"
             f" ORDER BY (t.jurisdiction_code = c.custodian) DESC, t.effective_from DESC, t.loaded_at DESC LIMIT 1) s ON true")
# `immunizations.repository.set_inferred_numbers`, as a CTE of the write
_RENUMBER = (f"UPDATE {DOSES.name} SET dose_number = r.n, updated_at = %s FROM json_to_recordset(%s::json) AS r(id uuid, n int)"
             f" WHERE {DOSES.name}.id = r.id AND {DOSES.name}.dose_number_inferred")


def _first(with_schedules: bool) -> Compiled:
    parts = [_LOCKS, dose_batch.PG_SNAPSHOT, _RECEIPTS] + ([_IN_FORCE] if with_schedules else [])
    return Compiled("; ".join(parts), {}, frozenset())
