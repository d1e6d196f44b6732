"""The batch upload of a device's day of work (issue 5): patients, doses, corrections, voids.

Invariants:
- Items are judged in order, with the same rules as the single routes: validation, scope,
  encryption and audit are identical. `patient.create`, `dose.correct` and `dose.void` run one by
  one through the services (registry/patients/service.register, registry/immunizations/service.
  correct, void), each in its own savepoint; a refused one rolls back its savepoint only and the
  refusal events it wrote are written again, so they stay on record.
- Consecutive `dose.record` items (a run; a repeated id starts a new run) are set-based: one
  query for their receipts, one snapshot of their patients and doses, each item judged against it
  plus the items before it (registry/immunizations/batch.py), then one insert per table. A refused
  item writes only its refusal event. Each item's result and events are those it would get on
  its own; if a concurrent upload took one of the ids first, the run's writes roll back to a
  savepoint and its accepted items go one by one.
- Resending the whole batch is safe: each applied item leaves a receipt (kind, record id, keyed
  MAC of its content) in the same transaction as its record. An item whose receipt matches is
  `duplicate` and changes nothing; the same id with other content is `rejected: conflict`,
  never an overwrite. The role's permission for the item is checked before any receipt is
  looked up, and only receipts of the caller or its facility are seen (repository.receipts): a
  caller cannot learn that someone else's receipt exists, nor test guessed content against it.
- Nothing acknowledged is lost: the results are returned only after the unit of work commits
  the whole batch (api/deps.py); a failed commit answers 5xx and the device resends.
- Audit: one event per applied or refused item, the one the single-record service writes (a
  citizen's access log shows each record created), plus one `sync.batch` event per request with
  counts and the patients of every created or duplicate item as subjects.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from registry import errors as e
from registry.bulk.writer import integrity_errors
from registry.context import ServiceContext
from registry.immunizations import batch as dose_batch
from registry.immunizations import service as doses
from registry.patients import service as patients
from registry.sync import repository as repo
from registry.sync.schemas import ITEM, BatchResult, CorrectItem, DoseItem, ItemResult, PatientItem, VoidItem
from security.access.permissions import Permission
from security.audit import trail as audit

ACTION = "sync.batch"
SECRET_NAME = "sync-receipts"
_REASONS = [(e.InvalidInput, "invalid"), (e.NotFound, "not_found"), (e.Forbidden, "forbidden"), (e.Conflict, "conflict"),
            (e.PreconditionFailed, "precondition_failed"), (e.PreconditionRequired, "precondition_required")]
_NEEDS = {"patient.create": Permission.PATIENT_CREATE, "dose.record": Permission.IMMUNIZATION_RECORD,
          "dose.correct": Permission.IMMUNIZATION_AMEND, "dose.void": Permission.IMMUNIZATION_AMEND}
_ACTION_OF = {"patient.create": "patient.create", "dose.record": "immunization.create",
              "dose.correct": "immunization.correct", "dose.void": "immunization.void"}


def upload(ctx: ServiceContext, items: list[dict]) -> BatchResult:
    limit = ctx.runtime.settings.sync.batch_max_items
    if len(items) > limit:
        ctx.trail.record(ctx.session, ACTION, audit.INVALID, resource_type="Bundle", detail={"field": "items", "items": len(items)})
        raise e.InvalidInput(f"a batch holds at most {limit} items; split the upload", field="items")
    results: list[ItemResult] = []
    patient_of: list[uuid.UUID | None] = []
    created: set[str] = set()  # patients created by this batch: a likely duplicate of one is `likely_duplicate_in_file`
    run: list[tuple[int, DoseItem]] = []
    run_ids: set[uuid.UUID] = set()

    def flush() -> None:
        for result, patient_id in _doses(ctx, run):
            results.append(result)
            patient_of.append(patient_id)
        run.clear()
        run_ids.clear()

    for index, raw in enumerate(items):
        parsed = _parse(index, raw)
        if isinstance(parsed, DoseItem):
            if parsed.data.id in run_ids:
                flush()  # a repeated id sees the receipt its first occurrence leaves
            run.append((index, parsed))
            run_ids.add(parsed.data.id)
            continue
        flush()
        result, patient_id = parsed if isinstance(parsed, tuple) else _one(ctx, index, parsed, created)
        if result.op == "patient.create" and result.result == "created":
            created.add(str(result.id))
        results.append(result)
        patient_of.append(patient_id)
    flush()
    subjects = [pid for r, pid in zip(results, patient_of) if pid is not None and r.result != "rejected"]
    counts = {k: sum(r.result == k for r in results) for k in ("created", "duplicate", "rejected")}
    ctx.trail.record(ctx.session, ACTION, audit.SUCCESS, resource_type="Bundle", subjects=subjects,
                     detail={"items": len(items), **counts})
    return BatchResult(results=results, **counts)


def _parse(index: int, raw: dict):
    """The item, or (its `rejected: invalid` result, None) when it is malformed (no event: nothing was reached)."""
    op = raw.get("op") if isinstance(raw, dict) else None
    try:
        item = ITEM.validate_python(raw)
        _require_ids(item)
        return item
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()) if str(p) not in _ITEM_TAGS)
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        return ItemResult(index=index, op=op if op in _NEEDS else None, result="rejected", reason="invalid",
                          field=where or "op", detail=msg), None
    except e.InvalidInput as exc:
        return ItemResult(index=index, op=op, result="rejected", reason="invalid", field=exc.field, detail=exc.message), None


def _doses(ctx: ServiceContext, run: list[tuple[int, DoseItem]]) -> list[tuple[ItemResult, uuid.UUID | None]]:
    """A run of consecutive `dose.record` items with distinct ids, set-based: one query for their
    receipts, one snapshot for their validation (registry/immunizations/batch.py), one insert per
    table (on PostgreSQL one statement, the receipts with the doses). Each item's result and
    events are those `_one` gives it. If a concurrent upload wrote
    one of the ids first, the run's writes are rolled back and its accepted items take `_one`."""
    if not run:
        return []
    out: dict[int, tuple[ItemResult, uuid.UUID | None]] = {}
    if not ctx.principal.can(_NEEDS["dose.record"]):
        return [_one(ctx, index, item) for index, item in run]
    seen = repo.receipts(ctx.session, ctx.principal, "dose", [item.data.id for _, item in run])
    todo, macs = [], {}
    for index, item in run:
        macs[index] = mac = _mac(ctx, item)
        if item.data.id in seen:
            out[index] = _seen(ctx, index, item, seen[item.data.id], mac)
        else:
            todo.append((index, item))
    plan = dose_batch.plan(ctx, [(item.patient_id, item.data) for _, item in todo])
    now = datetime.now(UTC)
    receipts = []
    for (index, item), res in zip(todo, plan.outcomes):
        base = {"index": index, "op": item.op, "id": item.data.id}
        if isinstance(res, e.DomainError):
            out[index] = ItemResult(**base, result="rejected", **_reason(res)), None
            continue
        out[index] = ItemResult(**base, result="created", version=res.row["version"]), res.row["patient_id"]
        receipts.append({"kind": "dose", "record_id": item.data.id, "content_mac": macs[index], "result_id": item.data.id,
                         "user_id": ctx.principal.user_id, "received_at": now})
    if receipts:
        savepoint = ctx.session.begin_nested()
        try:
            dose_batch.write(ctx, plan, also=[(repo.RECEIPTS, receipts, None)])
            savepoint.commit()
            dose_batch.written(ctx, plan)
        except integrity_errors(ctx.session):
            savepoint.rollback()
            for index, item in todo:
                if out[index][0].result == "created":
                    out[index] = _one(ctx, index, item)
    return [out[index] for index, _ in run]


def _seen(ctx: ServiceContext, index: int, item, seen, mac: bytes, refuse=None) -> tuple[ItemResult, uuid.UUID | None]:
    """An item whose id already has a receipt: `duplicate` when the content matches, else a
    conflict (its event recorded in the session, or given to `refuse(action, outcome, **event)`)."""
    kind, record_id, patient_id = _identity(item)
    base = {"index": index, "op": item.op, "id": record_id}
    if hmac.compare_digest(seen.content_mac, mac):
        return ItemResult(**base, result="duplicate", replacement_id=seen.result_id), patient_id
    if refuse is None:
        def refuse(action, outcome, **event):
            ctx.trail.record(ctx.session, action, outcome, **event)
    refuse(_ACTION_OF[item.op], audit.CONFLICT, resource_type=_resource(item), resource_id=record_id,
           detail={"reason": "same id, different content"})
    return ItemResult(**base, result="rejected", reason="conflict", field=_id_field(item),
                      detail="this id was already uploaded with different content; it was not changed"), None


def _one(ctx: ServiceContext, index: int, item, created: set[str] = frozenset()) -> tuple[ItemResult, uuid.UUID | None]:
    """One parsed item through the single-record services, in its own savepoint. A registration
    refused as a likely duplicate of a patient `created` earlier in the same batch (the same child
    twice in one upload, issue 13) gets the code `likely_duplicate_in_file`."""
    kind, record_id, patient_id = _identity(item)
    base = {"index": index, "op": item.op, "id": record_id}
    if not ctx.principal.can(_NEEDS[item.op]):
        ctx.trail.record(ctx.session, _ACTION_OF[item.op], audit.DENIED, resource_id=record_id, detail={"reason": "role"})
        return ItemResult(**base, result="rejected", reason="forbidden", detail="your role does not allow this"), None
    mac = _mac(ctx, item)
    seen = repo.receipt(ctx.session, ctx.principal, kind, record_id)
    if seen is not None:
        return _seen(ctx, index, item, seen, mac)
    mark = ctx.trail.refusal_mark()
    savepoint = ctx.session.begin_nested()
    try:
        extra, result_id, patient_id = _apply(ctx, item)
        repo.add_receipt(ctx.session, {"kind": kind, "record_id": record_id, "content_mac": mac, "result_id": result_id,
                                       "user_id": ctx.principal.user_id, "received_at": datetime.now(UTC)})
        savepoint.commit()
    except (e.DomainError, IntegrityError) as exc:
        savepoint.rollback()
        ctx.trail.rewrite_refusals_since(ctx.session, mark)
        return ItemResult(**base, result="rejected", **refusal_reason(exc, created)), None
    return ItemResult(**base, result="created", **extra), patient_id


_ITEM_TAGS = {"patient.create", "dose.record", "dose.correct", "dose.void"}


def _require_ids(item) -> None:
    if isinstance(item, (PatientItem, DoseItem)) and item.data.id is None:
        raise e.InvalidInput("a batch item needs a client-generated id (UUID), so that a resend is recognised", field="data.id")


def _identity(item) -> tuple[str, uuid.UUID, uuid.UUID | None]:
    if isinstance(item, PatientItem):
        return "patient", item.data.id, item.data.id
    if isinstance(item, DoseItem):
        return "dose", item.data.id, item.patient_id
    return item.op, item.dose_id, None


def _resource(item) -> str:
    return "Patient" if isinstance(item, PatientItem) else "Immunization"


def _id_field(item) -> str:
    return "data.id" if isinstance(item, (PatientItem, DoseItem)) else "dose_id"


def _mac(ctx: ServiceContext, item) -> bytes:
    """Keyed: the content (names, dates of birth) is guessable, so a plain hash would reveal it."""
    content = item.model_dump(mode="json", exclude={"if_match"}, exclude_unset=True)
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(ctx.runtime.keyring.secret(SECRET_NAME), canonical, hashlib.sha256).digest()


def _apply(ctx: ServiceContext, item) -> tuple[dict, uuid.UUID | None, uuid.UUID | None]:
    if isinstance(item, PatientItem):
        view = patients.register(ctx, item.data)
        return {"version": view.version, "health_id": view.health_id, "access_code": view.access_code}, view.id, view.id
    if isinstance(item, DoseItem):
        view = doses.record(ctx, item.patient_id, item.data)
        return {"version": view.version}, view.id, view.patient_id
    if isinstance(item, CorrectItem):
        view = doses.correct(ctx, item.dose_id, item.if_match, item.data)
        return {"version": view.version, "replacement_id": view.id}, view.id, view.patient_id
    assert isinstance(item, VoidItem)
    view = doses.void(ctx, item.dose_id, item.if_match, item.data)
    return {"version": view.version}, None, view.patient_id


def refusal_reason(exc: Exception, created: set[str]) -> dict:
    """`_reason`, and a likely duplicate of a patient `created` earlier in the same batch (the
    same child twice in one upload, issue 13) gets the code `likely_duplicate_in_file`."""
    reason = _reason(exc)
    if reason.get("code") == "likely_duplicate" and created & {c.get("id") for c in getattr(exc, "candidates", ())}:
        reason["code"] = "likely_duplicate_in_file"
    return reason


def _reason(exc: Exception) -> dict:
    if isinstance(exc, IntegrityError):  # a concurrent upload of the same record won the race
        return {"reason": "conflict", "detail": "the record was written concurrently; resend to see its state"}
    reason = next((r for cls, r in _REASONS if isinstance(exc, cls)), "rejected")
    code = getattr(exc, "code", None)
    out = {"reason": reason, "code": code if isinstance(code, str) else None, "field": exc.field, "detail": exc.message}
    if getattr(exc, "merged_into", None) is not None:  # code `merged`: resend the item for the surviving record
        out["merged_into"] = exc.merged_into
    return out
