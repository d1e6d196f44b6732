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
from api.routing import GatedRoute
from registry.audit_log import anomalies, break_glass, exports
from registry.audit_log.repository import EventFilter
from registry.audit_log.schemas import EXAMPLE_BREAK_GLASS_READ, EXAMPLE_SEARCH, AuditEventView
from registry.context import ServiceContext
from security.access.permissions import Permission as P
from security.audit.trail import OUTCOMES

router = APIRouter(route_class=GatedRoute, prefix="/api/v1/audit", tags=["audit"])

EXPORT_DOC = ("Streams every matching event in your jurisdiction, oldest first, up to a hard maximum of "
              "`NHR_AUDIT_EXPORT_MAX_ROWS` rows (100,000 by default). Response headers: `X-Export-Count` (rows sent), "
              "`X-Export-Max-Rows` (the cap) and `X-Export-Truncated` (`true` if more events matched: narrow the time "
              "range). `fhir` is NDJSON of FHIR R4 AuditEvent resources following IHE BALP (PatientRead, PatientQuery, "
              "create/update/delete). The export is itself audited (`audit.export`, with filter names, never values).")

# Response examples: the two example events as each format serialises them (FHIR: the break-glass read).
_EXAMPLE_VIEWS = [AuditEventView.model_validate(e) for e in (EXAMPLE_BREAK_GLASS_READ, EXAMPLE_SEARCH)]
_EXPORT_EXAMPLES = {
    "application/x-ndjson": "".join(exports.render(_EXAMPLE_VIEWS, "ndjson", "")),
    "text/csv": "".join(exports.render(_EXAMPLE_VIEWS, "csv", "")),
    "application/fhir+ndjson": "".join(exports.render(_EXAMPLE_VIEWS[:1], "fhir", "NHR PK (nhr)")),
}
_ANOMALY_EXAMPLE = {
    "since": "2026-11-20T19:00:00Z", "until": "2026-11-21T19:00:00Z",
    "settings": {"timezone": "Asia/Karachi", "working_hours": [7, 20], "distinct_patients_min": 50,
                 "distinct_patients_peer_factor": 3.0, "refusals_per_hour": 5},
    "flags": [
        {"kind": "outside_working_hours", "actor_user_id": "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
         "actor_username": "official.lahore", "actor_role": "health_official", "actor_scope_level": "district",
         "actor_scope_code": "PK-PB-LAH", "count": 3, "threshold": None, "day": None,
         "first_at": "2026-11-20T22:41:07.512000Z", "last_at": "2026-11-20T22:58:31.090000Z",
         "explanation": "3 access(es) to patient data outside working hours (07:00-20:00 Asia/Karachi), "
                        "between 2026-11-20 22:41 and 2026-11-20 22:58 UTC."},
        {"kind": "repeated_refusals", "actor_user_id": "5e4d3c2b-1a09-4f8e-9d7c-6b5a4f3e2d1c",
         "actor_username": "clinic.lah02", "actor_role": "clinic_worker", "actor_scope_level": "facility",
         "actor_scope_code": "F-LAH-02", "count": 7, "threshold": 5.0, "day": "2026-11-21",
         "first_at": "2026-11-21T04:02:11.400000Z", "last_at": "2026-11-21T04:19:45.872000Z",
         "explanation": "7 refused requests (denied or not found) in the hour from 2026-11-21 04:00 UTC; the threshold "
                        "is 5 per hour. Repeated refusals can mean probing for records."}]}


@router.get("/events/export", summary="Export audit events as NDJSON, CSV or FHIR AuditEvent", description=EXPORT_DOC,
            response_class=StreamingResponse,
            responses={200: {"content": {media: {"schema": {"type": "string"}, "example": example}
                                         for media, example in _EXPORT_EXAMPLES.items()}}})
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
            responses={200: {"content": {"application/json": {"example": _ANOMALY_EXAMPLE}}}},
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
