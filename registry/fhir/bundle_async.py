"""FHIR transaction and batch Bundles of Immunization creates on the event loop (issue 17): the
campaign case of `POST /fhir/R4` on the async unit of work (registry/async_unit.py), PostgreSQL
only. Same response Bundle (fullUrl, location, etag, OperationOutcome with expression), rows and
audit events as the sync path (registry/fhir/bundle.py, whose invariants hold here too); on
SQLite, and for any other Bundle, `process_async` runs `bundle.process` in a worker thread.

Which Bundles (`fits_on_loop`, decided at the gate before the Idempotency-Key is claimed, so that
the key's stored response commits in the transaction of whichever path does the work): a
transaction or batch whose entries are all well-formed `POST Immunization` entries, at most
`bundle.MAX_ENTRIES`, from a caller allowed to record doses (else the sync path audits the
denial per entry). A Bundle with a Patient (or a malformed entry) takes the sync path.

Round trips (as registry/sync/batch_async.py): the key's claim; BEGIN with the patients'
`FOR KEY SHARE` locks, the snapshot (`dose_batch.PG_SNAPSHOT`) and the schedule in force, in one
message (`batch_async.open_snapshot`, shared with the batch upload); one statement writing the
doses, their report-queue marks and every audit event (the refusals' and the successes'); the
stored response and COMMIT. The judgement is
`dose_batch.judge` on the snapshot, with `stop_on_error` for a transaction.

- transaction: the first refusal (mapping or dose rule, in entry order) raises before anything
  is written; the unit of work rolls back and writes the refusal events (booked on the trail),
  as on the sync path.
- batch: each entry on its own: a mapping refusal gets one event of its own, a dose-rule refusal
  its judgement's event, both written with the accepted doses in the one statement.
- A FHIR create carries no client id (the server draws each dose's id), so no concurrent writer
  can take one; should the write still fail on a unique key, the transaction is rolled back and
  the Bundle judged again on a new snapshot, as the batch upload does.
"""

from __future__ import annotations

from datetime import UTC, datetime

from anyio import to_thread

from registry import errors as e
from registry.async_unit import AsyncUnit
from registry.bulk.writer import _JSON, insert_many_sql
from registry.context import ServiceContext
from registry.errors import DomainError, audit_outcome
from registry.fhir import bundle, service
from registry.fhir.mapping import FhirInvalid
from registry.immunizations import batch as dose_batch
from registry.sync import batch_async
from security.access.permissions import Permission

ATTEMPTS = batch_async.ATTEMPTS
ON_LOOP_ENTRIES = batch_async.ON_LOOP_ITEMS  # more entries are judged in a worker thread
_ACTION = "immunization.create"


def fits_on_loop(body: object, principal) -> bool:
    """Whether a Bundle (the request's JSON, not yet validated) is one `_process` answers exactly
    as `bundle.process` would: see the module docstring. Anything else: the sync path."""
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle" or body.get("type") not in ("transaction", "batch"):
        return False
    entries = body.get("entry")
    if not isinstance(entries, list) or not entries or len(entries) > bundle.MAX_ENTRIES:
        return False
    if not principal.can(Permission.IMMUNIZATION_RECORD):
        return False
    try:
        return all(bundle._entry_kind(entry, i) == "Immunization" for i, entry in enumerate(entries))
    except FhirInvalid:
        return False


async def process_async(ctx: ServiceContext, body: dict, base: str) -> dict:
    if ctx.unit is None:
        return await to_thread.run_sync(bundle.process, ctx, body, base)
    kind, entries = bundle._check_shape(body)
    for _ in range(ATTEMPTS):
        try:
            return await _process(ctx, ctx.unit, kind, entries, base)
        except batch_async._Raced:
            await ctx.unit.rollback()
    raise e.Conflict("concurrent writers wrote the same records; resend the Bundle to see their state", field="Bundle.entry")


async def _process(ctx: ServiceContext, unit: AsyncUnit, kind: str, entries: list[dict], base: str) -> dict:
    trail = ctx.trail
    transaction = kind == "transaction"
    run = bundle._Run(ctx, base)  # its `resolve` only: a urn:uuid reference is refused, as there
    results: list[dict | None] = [None] * len(entries)
    refusals: list[dict] = []

    def refuse(action: str, outcome: str, **event) -> None:
        refusals.append(trail.build(action, outcome, **event))

    with batch_async.refusals_booked(trail, refusals):
        todo, failure = [], None
        for i, entry in enumerate(entries):
            try:
                todo.append((i, service.immunization_input(entry["resource"], run.resolve)))
            except DomainError as exc:
                exc = bundle._prefixed(exc, i, "Immunization")
                if transaction:
                    failure = exc
                    break
                # `bundle._failed`: refused before any service, one event of its own
                refuse(_ACTION, audit_outcome(exc), resource_type="Immunization", detail={"field": exc.field})
                results[i] = bundle._response(exc, "Immunization")
        if transaction and not todo:
            raise failure
        pairs = [pair for _, pair in todo]
        snap = await batch_async.open_snapshot(ctx, unit, pairs)

        def decide():
            plan = dose_batch.judge(ctx, pairs, snap.patients, snap.doses, snap.taken, snap.schedules.__getitem__,
                                    snap.today, refuse, stop_on_error=transaction)
            judged = [(i, res) for (i, _), res in zip(todo, plan.outcomes)]
            for i, res in judged:
                if isinstance(res, DomainError):
                    if transaction:
                        raise bundle._prefixed(res, i, "Immunization")
                    results[i] = bundle._response(bundle._prefixed(res, i, "Immunization"), "Immunization")
            if failure is not None:
                raise failure
            for i, res in judged:
                if not isinstance(res, DomainError):
                    results[i] = bundle._dose_entry(run, res)
            return plan, _statement(unit, plan, [*refusals, *plan.events])

        plan, (sql, params) = decide() if len(todo) <= ON_LOOP_ENTRIES else await to_thread.run_sync(decide)
        if sql is not None:
            await batch_async._write(unit, sql, params)
    dose_batch.written(ctx, plan)
    return {"resourceType": "Bundle", "type": f"{kind}-response", "entry": results}


def _statement(unit: AsyncUnit, plan: dose_batch.Plan, events: list[dict]) -> tuple[str | None, list]:
    """The one write: the accepted doses, their marks, every event (MACed), the renumbering of
    inferred doses already on record; (None, []) when there is nothing to write."""
    event_mac = unit.db.event_mac
    for row in events:
        row["mac"] = event_mac.tag(row, ()) if event_mac is not None else None
    extra = [(batch_async._RENUMBER, [datetime.now(UTC), _JSON.encode([{"id": k, "n": v} for k, v in plan.renumbered.items()])])] \
        if plan.renumbered else []
    parts = [(t, rows, cols) for t, rows, cols in [*dose_batch.dose_parts(plan), (batch_async._EVENTS, events, None)] if rows]
    if not parts:
        return None, []
    return insert_many_sql(parts, extra)
