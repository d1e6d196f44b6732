"""Audit event search for auditors: every filter of `GET /api/v1/audit/events`, through the same
service (`audit.query`, one event per page, scoped to the auditor's jurisdiction by the repository)
and the same gate; the export buttons (CSV, NDJSON, FHIR AuditEvent) call the service of
`GET /api/v1/audit/events/export` (`audit.export`, capped and counted as there). Filters and the
page cursor travel in POST bodies (a patient id is a search value)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Form
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.console.gate import ConsoleCall, Gate
from api.console.templating import render
from api.routing import GatedRoute
from registry.audit_log import exports, service
from registry.audit_log.repository import EventFilter
from security.access.permissions import Permission as P
from security.audit.trail import OUTCOMES

router = APIRouter(route_class=GatedRoute, prefix="/console/audit", include_in_schema=False)
PAGE = 50

Text = Annotated[str | None, Form(max_length=48)]


def _form(call: ConsoleCall, **context):
    return render(call.request, "audit.html", me=call.principal, csrf=call.csrf, outcomes=OUTCOMES, f=context.pop("f", {}),
                  **context)


@router.get("")
def audit_form(call: Annotated[ConsoleCall, Gate(P.AUDIT_READ, audited=False)]):
    return _form(call)


def _filter(patient_id, actor_user_id, action, outcome, since, until, break_glass, facility, purpose_of_use) -> EventFilter:
    return EventFilter(patient_id, actor_user_id, action or None, outcome or None,
                       datetime.combine(since, time.min, UTC) if since else None,
                       datetime.combine(until, time.min, UTC) + timedelta(days=1) if until else None,
                       {"yes": True, "no": False}.get(break_glass or ""), facility or None, purpose_of_use or None)


Outcome = Annotated[Literal[OUTCOMES] | None, Form()]  # type: ignore[valid-type]
PatientId = Annotated[uuid.UUID | None, Form()]
Day = Annotated[date | None, Form()]
BreakGlass = Annotated[Literal["yes", "no"] | None, Form()]
Facility = Annotated[str | None, Form(max_length=32)]
Purpose = Annotated[str | None, Form(pattern="^[A-Z]{2,16}$")]


@router.post("")
async def audit_search(call: Annotated[ConsoleCall, Gate(P.AUDIT_READ)], patient_id: PatientId = None,
                       actor_user_id: PatientId = None, action: Text = None, outcome: Outcome = None, since: Day = None,
                       until: Day = None, break_glass: BreakGlass = None, facility: Facility = None,
                       purpose_of_use: Purpose = None, cursor: Annotated[str | None, Form(max_length=200)] = None):
    ctx = call.context()
    f = _filter(patient_id, actor_user_id, action, outcome, since, until, break_glass, facility, purpose_of_use)
    page = await run_in_threadpool(service.search, ctx, f, cursor or None, PAGE)
    shown = {"patient_id": patient_id, "actor_user_id": actor_user_id, "action": action, "outcome": outcome, "since": since,
             "until": until, "break_glass": break_glass, "facility": facility, "purpose_of_use": purpose_of_use}
    return _form(call, page=page, f={k: v for k, v in shown.items() if v not in (None, "")})


@router.post("/export")
async def audit_export(call: Annotated[ConsoleCall, Gate(P.AUDIT_READ, action="audit.export")],
                       format: Annotated[Literal["csv", "ndjson", "fhir"], Form()], patient_id: PatientId = None,
                       actor_user_id: PatientId = None, action: Text = None, outcome: Outcome = None, since: Day = None,
                       until: Day = None, break_glass: BreakGlass = None, facility: Facility = None,
                       purpose_of_use: Purpose = None):
    """The API's export (same service, cap, headers and `audit.export` event) as a download."""
    ctx = call.context()
    f = _filter(patient_id, actor_user_id, action, outcome, since, until, break_glass, facility, purpose_of_use)
    result = await run_in_threadpool(exports.export, ctx, f, format)
    ext = "csv" if format == "csv" else "ndjson"
    headers = {"X-Export-Count": str(result.count), "X-Export-Max-Rows": str(result.max_rows),
               "X-Export-Truncated": "true" if result.truncated else "false",
               "Content-Disposition": f'attachment; filename="audit-events.{ext}"'}
    return StreamingResponse(result.chunks, media_type=result.media_type, headers=headers)
