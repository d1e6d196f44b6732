"""FHIR transaction and batch Bundles of Patient and Immunization creates on the event loop (issue
17): the campaign case of `POST /fhir/R4` on the async unit of work (registry/async_unit.py), PostgreSQL
only. Same response Bundle (fullUrl, location, etag, OperationOutcome with expression), rows and
audit events as the sync path (registry/fhir/bundle.py, whose invariants hold here too); on
SQLite, and for any other Bundle, `process_async` runs `bundle.process` in a worker thread.

Which Bundles (`fits_on_loop`, decided at the gate before the Idempotency-Key is claimed, so that
the key's stored response commits in the transaction of whichever path does the work): a
transaction or batch whose entries are all well-formed `POST Patient` (without `ifNoneExist`: a
conditional create searches first) or `POST Immunization` entries, at most `bundle.MAX_ENTRIES`,
from a caller allowed to register patients (when there is a Patient) and to record doses (when
there is an Immunization; else the sync path audits the denial per entry). Any other Bundle (a
malformed entry, a conditional create) takes the sync path.

Patients (as the sync path: before the Immunizations, each visible to the next and to every
Immunization): the registrations of the batch upload (registry/sync/batch_patients.py: prepared
before the reads, judged one by one in entry order on the snapshot with `Judgement`, their rows
written in the one statement; the server draws each patient's id before the reads). An
Immunization referencing a Patient entry's `urn:uuid:` fullUrl resolves to that patient only if
its registration was accepted (the snapshot reads the drawn ids); a likely duplicate of a patient
accepted earlier in the Bundle is "in file", as there. A Patient entry refused before any check
(mapping) gets one event of its own (`bundle._failed`).

Round trips (as registry/sync/batch_async.py): the key's claim; BEGIN with the registrations'
advisory locks, the patients' `FOR KEY SHARE` locks, the snapshot (`dose_batch.PG_SNAPSHOT`) and the schedule in force and the
registrations' reads and access-code pool rows, in one message (`batch_async.open_snapshot`,
shared with the batch upload); one statement writing the new patients (with their index rows,
access codes, marks, blocking keys, candidate pairs), the doses, their report-queue marks and
every audit event (the refusals' and the successes'); the
stored response and COMMIT. The judgement is
`dose_batch.judge` on the snapshot, with `stop_on_error` for a transaction.

- transaction: the first refusal (mapping or dose rule, in entry order) raises before anything
  is written; the unit of work rolls back and writes the refusal events (booked on the trail),
  as on the sync path.
- batch: each entry on its own: a mapping refusal gets one event of its own, a dose-rule refusal
  its judgement's event, both written with the accepted doses in the one statement.
- A FHIR create carries no client id (the server draws each id), so no concurrent writer can
  take one; a drawn health ID held already (`batch_patients.Retry`) and should the write still fail on a unique key, the transaction is rolled back and
  the Bundle judged again on a new snapshot, as the batch upload does.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from types import SimpleNamespace

from anyio import to_thread

from registry import errors as e
from registry.async_unit import AsyncUnit
from registry.bulk.writer import _JSON, insert_many_sql
from registry.context import ServiceContext
from registry.errors import DomainError, audit_outcome
from registry.fhir import bundle, codes, mapping, service
from registry.fhir.mapping import FhirInvalid
from registry.immunizations import batch as dose_batch
from registry.linkage import service as linkage
from registry.linkage.service import LikelyDuplicate
from registry.patients import async_register as reg
from registry.patients import codec
from registry.sync import batch_async, batch_patients, upload_refusals
from security.access.permissions import Permission

ATTEMPTS = batch_async.ATTEMPTS
ON_LOOP_ENTRIES = batch_async.ON_LOOP_ITEMS  # more entries (or any Patient) are judged in a worker thread
_ACTION = "immunization.create"
_REGISTER = batch_patients.ACTION


def fits_on_loop(body: object, principal) -> bool:
    """Whether a Bundle (the request's JSON, not yet validated) is one `_process` answers exactly
    as `bundle.process` would: see the module docstring. Anything else: the sync path."""
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle" or body.get("type") not in ("transaction", "batch"):
        return False
    entries = body.get("entry")
    if not isinstance(entries, list) or not entries or len(entries) > bundle.MAX_ENTRIES:
        return False
    try:
        kinds = [bundle._entry_kind(entry, i) for i, entry in enumerate(entries)]
    except FhirInvalid:
        return False
    if "Immunization" in kinds and not principal.can(Permission.IMMUNIZATION_RECORD):
        return False
    if "Patient" in kinds and not principal.can(Permission.PATIENT_CREATE):
        return False
    return not any(kind == "Patient" and entry["request"].get("ifNoneExist") for entry, kind in zip(entries, kinds))


async def process_async(ctx: ServiceContext, body: dict, base: str) -> dict:
    if ctx.unit is None:
        return await to_thread.run_sync(bundle.process, ctx, body, base)
    kind, entries = bundle._check_shape(body)
    for _ in range(ATTEMPTS):
        try:
            return await _process(ctx, ctx.unit, kind, entries, base)
        except upload_refusals.Raced:
            await ctx.unit.rollback()
    raise e.Conflict("concurrent writers wrote the same records; resend the Bundle to see their state", field="Bundle.entry")


async def _process(ctx: ServiceContext, unit: AsyncUnit, kind: str, entries: list[dict], base: str) -> dict:
    trail, principal = ctx.trail, ctx.principal
    transaction = kind == "transaction"
    run = bundle._Run(ctx, base)  # `resolve`: a urn:uuid reference to a Patient entry accepted (`run.created`)
    results: list[dict | None] = [None] * len(entries)
    refuse = upload_refusals.Refusals(trail)
    refusals, refusal_subjects = refuse.rows, refuse.subjects

    typed = [(i, entry, bundle._entry_kind(entry, i)) for i, entry in enumerate(entries)]
    patient_entries = [(i, entry) for i, entry, rtype in typed if rtype == "Patient"]
    dose_entries = [(i, entry) for i, entry, rtype in typed if rtype != "Patient"]
    with upload_refusals.refusals_booked(trail, refusals, refusal_subjects):
        mapped, unmapped = _patients(patient_entries)
        pending = await batch_patients.prepare(ctx, mapped)
        batch_patients.draw_health_ids(pending)
        drawn = {entries[one.index].get("fullUrl"): one.id for one in pending}
        before, after = None, ((), {})
        if pending:
            locks, lock_values, reads, read_values = batch_patients.statements(ctx, pending)
            before = (locks, lock_values) if locks is not None else None
            after = (reads, read_values)
        snap = await batch_async.open_snapshot(ctx, unit, _tentative(dose_entries, drawn), also_pids=[p.id for p in pending],
                                               custodians={principal.scope.province} if pending else set(),
                                               before=before, after=after)
        model = None
        if batch_patients.needs_model(pending):
            model = linkage.models.cached() or await reg._model(ctx.runtime)

        def decide():
            registered = _registrations(ctx, run, snap, pending, patient_entries, unmapped, model, refuse, results,
                                        transaction) if patient_entries else ([], [])
            accepted, unused = registered
            todo, failure = [], None
            for i, entry in dose_entries:
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
            if transaction and failure is not None and not todo:
                raise failure
            pairs = [pair for _, pair in todo]
            patients = batch_async.with_registered(snap, accepted)
            plan = dose_batch.judge(ctx, pairs, patients, snap.doses, snap.taken, snap.schedules.__getitem__,
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
            events = [*refusals, *(r.event for r in accepted), *plan.events]
            return plan, accepted, _statement(unit, plan, accepted, unused, events, refusal_subjects)

        try:
            plan, accepted, (sql, params) = (decide() if len(dose_entries) <= ON_LOOP_ENTRIES and not pending
                                             else await to_thread.run_sync(decide))
        except batch_patients.Retry as exc:
            raise upload_refusals.Raced() from exc
        if sql is not None:
            await batch_async._write(unit, sql, params)
    dose_batch.written(ctx, plan)
    for r in accepted:
        trail.written(r.event, [])
    return {"resourceType": "Bundle", "type": f"{kind}-response", "entry": results}


def _patients(patient_entries: list[tuple[int, dict]]) -> tuple[list, dict]:
    """The Patient entries mapped (`service.create_patient`'s mapping), each as a registration
    with the id the server draws for it: ([(i, item)], {i: the mapping's refusal, prefixed})."""
    mapped, unmapped = [], {}
    for i, entry in patient_entries:
        try:
            data = mapping.patient_from_fhir(mapping.validate(entry["resource"]))
        except DomainError as exc:
            unmapped[i] = bundle._prefixed(exc, i, "Patient")
            continue
        mapped.append((i, SimpleNamespace(op=_REGISTER, data=data.model_copy(update={"id": uuid.uuid4()}))))
    return mapped, unmapped


def _tentative(dose_entries: list[tuple[int, dict]], drawn: dict) -> list:
    """The (patient id, dose) pairs the snapshot reads for: each Immunization mapped as if every
    Patient entry were accepted (`drawn`: fullUrl -> the id drawn); the judgement maps them again."""
    def resolve(reference: str) -> uuid.UUID:
        if reference not in drawn:
            raise FhirInvalid("Immunization.patient", "does not resolve")
        return drawn[reference]

    pairs = []
    for _, entry in dose_entries:
        try:
            pairs.append(service.immunization_input(entry["resource"], resolve))
        except DomainError:
            pass
    return pairs


def _registrations(ctx: ServiceContext, run: bundle._Run, snap, pending: list, patient_entries: list, unmapped: dict,
                   model, refuse, results: list, transaction: bool) -> tuple[list, list]:
    """The Patient entries in entry order, as `bundle._Run.entry` / `bundle._batch_entry` answer
    them: (the accepted registrations, the pool rows left to put back). In a transaction the first
    refusal raises (its event given to `refuse`, booked by the caller)."""
    by_index = {one.index: one for one in pending}
    pool = batch_async.pool_rows(snap)
    judgement = batch_patients.Judgement(ctx, set(snap.patients), snap.more[0] if pending else [],
                                         {r[0] for r in snap.more[1]} if pending else set(), model, refuse, pool)
    accepted = []
    for i, entry in patient_entries:
        if i in unmapped:
            exc = unmapped[i]
            if transaction:
                raise exc
            refuse(_REGISTER, audit_outcome(exc), resource_type="Patient", detail={"field": exc.field})
            results[i] = bundle._response(exc, "Patient")
            continue
        try:
            registered, access_code = judgement.register(by_index[i])
        except DomainError as exc:
            if isinstance(exc, LikelyDuplicate) and judgement.created & {c.get("id") for c in exc.candidates}:
                exc = exc.in_file()
            exc = bundle._prefixed(exc, i, "Patient")
            if transaction:
                raise exc from None
            results[i] = bundle._response(exc, "Patient")
            continue
        accepted.append(registered)
        pid = registered.row["id"]
        run.created_ids.add(str(pid))
        full_url = entry.get("fullUrl")
        if isinstance(full_url, str) and full_url.startswith("urn:uuid:"):
            run.created[full_url] = pid
        results[i] = bundle._created(run.base, "Patient", 201, _patient_resource(ctx, registered, access_code))
    return accepted, [vars(r) for r in pool]


def _patient_resource(ctx: ServiceContext, registered: batch_patients.Registered, access_code: str) -> dict:
    """`service.create_patient`'s answer: the new Patient with its access code, once."""
    out = mapping.patient_to_fhir(codec.to_view(ctx.runtime.cipher, SimpleNamespace(**registered.row)))
    out["extension"] = [{"url": codes.EXT_ACCESS_CODE, "valueString": access_code}]
    return service._extension_first(out)


def _statement(unit: AsyncUnit, plan: dose_batch.Plan, registered: list, unused: list, events: list[dict],
               refusal_subjects: dict) -> tuple[str | None, list]:
    """The one write: the accepted registrations' rows, the accepted doses, their marks, every
    event (MACed, with the refusals' subjects), the pool rows no registration took (put back), the
    renumbering of inferred doses already on record; (None, []) when there is nothing to write."""
    event_mac = unit.db.event_mac
    for row in events:
        of = [s["patient_id"] for s in refusal_subjects.get(row["id"], ())]
        row["mac"] = event_mac.tag(row, of) if event_mac is not None else None
    extra = [(batch_async._RENUMBER, [datetime.now(UTC), _JSON.encode([{"id": k, "n": v} for k, v in plan.renumbered.items()])])] \
        if plan.renumbered else []
    subjects = [s for rows in refusal_subjects.values() for s in rows]
    parts = [(t, rows, cols) for t, rows, cols in [*batch_async.registration_parts(registered), *dose_batch.dose_parts(plan),
                                                     (batch_async._EVENTS, events, None), (batch_async._SUBJECTS, subjects, None),
                                                     (batch_patients.POOL, unused, batch_patients.POOL_COLUMNS)]
             if rows]
    if not parts:
        return None, []
    return insert_many_sql(parts, extra)
