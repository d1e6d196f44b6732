"""The auditor's workbench: exports (NDJSON, CSV, FHIR AuditEvent), the break-glass review queue
and anomaly flags. Every request is one audited event (`audit.export`, `audit.review_queue`,
`audit.finding`, `audit.anomalies`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from api.deps import require
from registry.audit_log import anomalies, break_glass, exports
from registry.audit_log.repository import EventFilter
from registry.context import ServiceContext
from security.access.permissions import Permission as P
from security.audit.trail import OUTCOMES

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])

EXPORT_DOC = ("Streams every matching event in your jurisdiction, oldest first, up to a hard maximum of "
              "`NHR_AUDIT_EXPORT_MAX_ROWS` rows (100,000 by default). Response headers: `X-Export-Count` (rows sent), "
              "`X-Export-Max-Rows` (the cap) and `X-Export-Truncated` (`true` if more events matched: narrow the time "
              "range). `fhir` is NDJSON of FHIR R4 AuditEvent resources following IHE BALP (PatientRead, PatientQuery, "
              "create/update/delete). The export is itself audited (`audit.export`, with filter names, never values).")


@router.get("/events/export", summary="Export audit events as NDJSON, CSV or FHIR AuditEvent", description=EXPORT_DOC,
            response_class=StreamingResponse,
            responses={200: {"content": {"application/x-ndjson": {}, "text/csv": {}, "application/fhir+ndjson": {}}}})
def export_events(
    ctx: Annotated[ServiceContext, Depends(require(P.AUDIT_READ, action="audit.export"))],
    format: Annotated[Literal["ndjson", "csv", "fhir"], Query(openapi_examples={
        "fhir": {"summary": "FHIR AuditEvent (BALP)", "value": "fhir"}, "csv": {"value": "csv"}})] = "ndjson",
    patient_id: uuid.UUID | None = None,
    actor_user_id: uuid.UUID | None = None,
    action: Annotated[str | None, Query(max_length=48)] = None,
    outcome: Annotated[str | None, Query(pattern="^(" + "|".join(OUTCOMES) + ")$")] = None,
    since: Annotated[datetime | None, Query(openapi_examples={"day": {"value": "2026-11-01T00:00:00Z"}})] = None,
    until: datetime | None = None,
    break_glass: bool | None = None,
    facility: Annotated[str | None, Query(max_length=32)] = None,
    purpose_of_use: Annotated[str | None, Query(pattern="^[A-Z]{2,16}$")] = None,
):
    f = EventFilter(patient_id, actor_user_id, action, outcome, since, until, break_glass, facility, purpose_of_use)
    result = exports.export(ctx, f, format)
    ext = "csv" if format == "csv" else "ndjson"
    headers = {"X-Export-Count": str(result.count), "X-Export-Max-Rows": str(result.max_rows),
               "X-Export-Truncated": "true" if result.truncated else "false",
               "Content-Disposition": f'attachment; filename="audit-events.{ext}"'}
    return StreamingResponse(result.chunks, media_type=result.media_type, headers=headers)


@router.get("/break-glass", response_model=break_glass.QueuePage, summary="The break-glass review queue",
            description="Emergency (break-glass) accesses in your jurisdiction, newest first: `pending` until an auditor "
                        "records a finding, then `reviewed` with the finding. Audited as `audit.review_queue`.")
def review_queue(
    ctx: Annotated[ServiceContext, Depends(require(P.AUDIT_READ, action="audit.review_queue"))],
    status: Annotated[Literal["pending", "reviewed"], Query(openapi_examples={"pending": {"value": "pending"}})] = "pending",
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
):
    return break_glass.queue(ctx, status, cursor, limit)


@router.post("/break-glass/{event_id}/finding", status_code=201, response_model=break_glass.FindingView,
             summary="Record the finding on an emergency access (final)",
             description="One finding per access; a second is 409. An access outside your jurisdiction is 404. The note "
                         "(at most 1,000 characters) is stored encrypted. Audited as `audit.finding`.",
             responses={404: {"description": "no break-glass access with this id in your jurisdiction"},
                        409: {"description": "a finding was already recorded"}})
def record_finding(event_id: uuid.UUID, body: break_glass.FindingIn,
                   ctx: Annotated[ServiceContext, Depends(require(P.AUDIT_REVIEW))]):
    return break_glass.record_finding(ctx, event_id, body)


@router.get("/anomalies", response_model=anomalies.AnomalyReport, summary="Anomaly flags, each explained",
            description="Flags in your jurisdiction between `since` and `until` (default: the last 24 hours; at most 92 "
                        "days): accesses outside capture scope without break-glass, unusually many distinct patients read "
                        "in a day compared with peers, access outside working hours, repeated refusals. Thresholds are "
                        "settings (`NHR_AUDIT_*`) and are echoed in the response. Audited as `audit.anomalies`.")
def anomaly_flags(
    ctx: Annotated[ServiceContext, Depends(require(P.AUDIT_READ, action="audit.anomalies"))],
    since: Annotated[datetime | None, Query(openapi_examples={"week": {"value": "2026-11-15T00:00:00+05:00"}})] = None,
    until: datetime | None = None,
):
    return anomalies.report(ctx, since, until)
