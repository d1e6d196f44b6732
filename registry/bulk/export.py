"""FHIR Bulk Data `$export` for health officials: kick-off, status, download, cancel.

Invariants:
- Only the official who kicked a job off may poll, download or cancel it; anyone else gets
  404 (audited `denied`), as if the job did not exist.
- The snapshot is a list of ids in the caller's capture scope (jurisdiction) as of
  `transaction_time` (created at or before it; `_since` keeps those changed since). It is
  built in bounded steps, one per status poll, so no request runs long and any worker can
  advance any job (nothing lives in a process).
- No patient data at rest: files are generated at download time, decrypted from the live rows
  of the snapshot's ids, and the scope is applied again then, so a narrowed scope narrows the
  file too. Every download is audited as `bulk.export.download` with each patient in the file
  as a subject; kick-off, polls and cancel write one event each.
- Jobs expire (`settings.bulk_export.ttl_seconds`): afterwards they answer 404 and their snapshot is
  deleted by the next kick-off.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from types import SimpleNamespace
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, delete, select, update

from registry import scoping
from registry.bulk import fhir_io
from registry.bulk.models import ExportItem, ExportJob
from registry.context import ServiceContext
from registry.fhir import capability
from registry.errors import InvalidInput, NotFound
from registry.immunizations.models import Immunization
from registry.immunizations.service import to_view as dose_view
from registry.patients import codec
from registry.patients.models import Patient
from registry.patients.repository import current
from security.audit import trail as audit

JOBS, ITEMS = ExportJob.__table__, ExportItem.__table__
P, D = Patient.__table__, Immunization.__table__
TYPES = fhir_io.TYPES
RESOURCE = "BulkExport"
GONE = "no export job with this id"
capability.add_system_operation("export", "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
                                "Bulk Data export (NDJSON, asynchronous) of Patient and Immunization for health officials, "
                                "limited to their jurisdiction; also Patient/$export")


@dataclass
class Status:
    done: bool
    progress: str
    job: SimpleNamespace


def parse_types(value: str | None) -> list[str]:
    if not value:
        return list(TYPES)
    types = list(dict.fromkeys(t.strip() for t in value.split(",") if t.strip()))
    if not types or any(t not in TYPES for t in types):
        raise InvalidInput(f"_type must be a comma-separated list of {', '.join(TYPES)}", field="_type")
    return types


def kickoff(ctx: ServiceContext, types: list[str], since: datetime | None, request_url: str) -> uuid.UUID:
    now = datetime.now(UTC)
    _purge_expired(ctx, now)
    p = ctx.principal
    job_id = uuid.uuid4()
    ctx.session.execute(JOBS.insert().values(
        id=job_id, user_id=p.user_id, scope_level=p.scope.level, scope_code=p.scope.code, types=types, since=since,
        request_url=request_url[:500], transaction_time=now, status="running", cursor={}, counts={t: 0 for t in types},
        created_at=now, expires_at=now + timedelta(seconds=ctx.runtime.settings.bulk_export.ttl_seconds)))
    ctx.trail.record(ctx.session, "bulk.export", audit.SUCCESS, resource_type=RESOURCE, resource_id=job_id,
                     detail={"types": types, "since": since is not None})
    return job_id


def _purge_expired(ctx: ServiceContext, now: datetime) -> None:
    stale = select(JOBS.c.id).where((JOBS.c.expires_at < now) | (JOBS.c.status == "cancelled"))
    ctx.session.execute(delete(ITEMS).where(ITEMS.c.job_id.in_(stale)))
    ctx.session.execute(update(JOBS).where(JOBS.c.expires_at < now, JOBS.c.status != "expired").values(status="expired"))


def _own_job(ctx: ServiceContext, job_id: uuid.UUID, action: str) -> SimpleNamespace:
    row = ctx.session.execute(select(JOBS).where(JOBS.c.id == job_id)).first()
    job = SimpleNamespace(**row._mapping) if row is not None else None
    now = datetime.now(UTC)
    if job is None or job.status in ("cancelled", "expired") or job.expires_at < now:
        ctx.trail.record(ctx.session, action, audit.NOT_FOUND, resource_type=RESOURCE, resource_id=job_id)
        raise NotFound(GONE)
    if job.user_id != ctx.principal.user_id:
        ctx.trail.record(ctx.session, action, audit.DENIED, resource_type=RESOURCE, resource_id=job_id,
                         detail={"reason": "job of another user"})
        raise NotFound(GONE)
    return job


def _snapshot_query(ctx: ServiceContext, job, rtype: str, after: str | None, limit: int):
    tt, since = job.transaction_time, job.since
    if rtype == "Patient":
        q = select(P.c.id, P.c.id.label("patient_id")).where(scoping.capture_clause(ctx.principal, P), current(),
                                                             P.c.created_at <= tt)
        if since is not None:
            q = q.where(P.c.updated_at >= since)
        key = P.c.id
    else:
        q = (select(D.c.id, D.c.patient_id).join(P, P.c.id == D.c.patient_id)
             .where(scoping.capture_clause(ctx.principal, P), current(), D.c.recorded_at <= tt, D.c.component_of.is_(None)))
        if since is not None:
            q = q.where(D.c.recorded_at >= since)
        key = D.c.id
    if after is not None:
        q = q.where(key > uuid.UUID(after))
    return q.order_by(key).limit(limit)


def _advance(ctx: ServiceContext, job) -> None:
    """Take the next bounded step of the snapshot."""
    budget = ctx.runtime.settings.bulk_export.step_rows
    cursor, counts = dict(job.cursor), dict(job.counts)
    for rtype in job.types:
        if cursor.get(rtype) == "done" or budget <= 0:
            continue
        rows = ctx.session.execute(_snapshot_query(ctx, job, rtype, cursor.get(rtype), budget)).all()
        if rows:
            ctx.session.execute(ITEMS.insert(), [{"job_id": job.id, "resource_type": rtype, "seq": counts[rtype] + i,
                                                  "resource_id": r.id, "patient_id": r.patient_id} for i, r in enumerate(rows)])
            counts[rtype] += len(rows)
            cursor[rtype] = str(rows[-1].id)
        if len(rows) < budget:
            cursor[rtype] = "done"
        budget -= len(rows)
    finished = all(cursor.get(t) == "done" for t in job.types)
    ctx.session.execute(update(JOBS).where(JOBS.c.id == job.id)
                        .values(cursor=cursor, counts=counts, status="completed" if finished else "running"))
    job.cursor, job.counts, job.status = cursor, counts, "completed" if finished else "running"


def status(ctx: ServiceContext, job_id: uuid.UUID) -> Status:
    action = "bulk.export.status"
    job = _own_job(ctx, job_id, action)
    if job.status == "running":
        _advance(ctx, job)
    done = job.status == "completed"
    progress = ", ".join(f"{t}: {job.counts.get(t, 0)}{'' if job.cursor.get(t) == 'done' else '+'}" for t in job.types)
    ctx.trail.record(ctx.session, action, audit.SUCCESS, resource_type=RESOURCE, resource_id=job_id,
                     detail={"state": job.status, "counts": job.counts})
    return Status(done, progress, job)


def manifest(job, base_url: str, file_rows: int) -> dict:
    output = []
    for rtype in job.types:
        total = job.counts.get(rtype, 0)
        for n in range(0, (total + file_rows - 1) // file_rows):
            output.append({"type": rtype, "url": f"{base_url}/fhir/R4/bulk-export/{job.id}/{rtype}/{n}.ndjson",
                           "count": min(file_rows, total - n * file_rows)})
    return {"transactionTime": job.transaction_time.isoformat(), "request": job.request_url,
            "requiresAccessToken": True, "output": output, "error": []}


def download(ctx: ServiceContext, job_id: uuid.UUID, rtype: str, n: int) -> tuple[int, str]:
    """File `n` of `rtype` as NDJSON, decrypted and mapped now from the snapshot's ids."""
    action = "bulk.export.download"
    job = _own_job(ctx, job_id, action)
    size = ctx.runtime.settings.bulk_export.file_rows
    if job.status != "completed" or rtype not in job.types or n < 0 or n * size >= max(job.counts.get(rtype, 0), 1):
        ctx.trail.record(ctx.session, action, audit.NOT_FOUND, resource_type=RESOURCE, resource_id=job_id)
        raise NotFound("no such file in this export")
    ids = select(ITEMS.c.resource_id).where(ITEMS.c.job_id == job_id, ITEMS.c.resource_type == rtype,
                                            ITEMS.c.seq >= n * size, ITEMS.c.seq < (n + 1) * size)
    scope = and_(scoping.capture_clause(ctx.principal, P), current())  # merged since the snapshot: left out too
    if rtype == "Patient":
        rows = ctx.session.execute(select(P).where(P.c.id.in_(ids), scope).order_by(P.c.id)).all()
        resources = [fhir_io.patient_resource(codec.to_view(ctx.runtime.cipher, r)) for r in rows]
        subjects = [r.id for r in rows]
    else:
        rows = ctx.session.execute(select(D).join(P, P.c.id == D.c.patient_id).where(D.c.id.in_(ids), scope)
                                   .order_by(D.c.id)).all()
        resources = [fhir_io.immunization_resource(dose_view(ctx, r)) for r in rows]
        subjects = [r.patient_id for r in rows]
    ctx.trail.record(ctx.session, action, audit.SUCCESS, resource_type=RESOURCE, resource_id=job_id, subjects=subjects,
                     detail={"type": rtype, "file": n, "count": len(resources)})
    return len(resources), "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in resources)


def cancel(ctx: ServiceContext, job_id: uuid.UUID) -> None:
    action = "bulk.export.cancel"
    _own_job(ctx, job_id, action)
    ctx.session.execute(delete(ITEMS).where(ITEMS.c.job_id == job_id))
    ctx.session.execute(update(JOBS).where(JOBS.c.id == job_id).values(status="cancelled"))
    ctx.trail.record(ctx.session, action, audit.SUCCESS, resource_type=RESOURCE, resource_id=job_id)
