"""The break-glass review queue for auditors, with the finding form: the same services as
`GET /api/v1/audit/break-glass` (`audit.review_queue`) and
`POST /api/v1/audit/break-glass/{event_id}/finding` (`audit.finding`; one finding per access, the
note stored encrypted), through the same gate."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Form, Query
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from api.console.gate import ConsoleCall, Gate
from api.console.templating import render
from api.routing import GatedRoute
from registry.audit_log import break_glass
from security.access.permissions import Permission as P

router = APIRouter(route_class=GatedRoute, prefix="/console/audit/break-glass", include_in_schema=False)


@router.get("")
async def queue(call: Annotated[ConsoleCall, Gate(P.AUDIT_READ, action="audit.review_queue")],
                status: Annotated[Literal["pending", "reviewed"], Query()] = "pending"):
    ctx = call.context()
    page = await run_in_threadpool(break_glass.queue, ctx, status, None, 100)
    return render(call.request, "review.html", me=call.principal, csrf=call.csrf, page=page, status=status,
                  can_review=call.principal.can(P.AUDIT_REVIEW))


@router.post("/finding")
async def finding(call: Annotated[ConsoleCall, Gate(P.AUDIT_REVIEW)], event_id: Annotated[uuid.UUID, Form()],
                  verdict: Annotated[Literal["justified", "not_justified"], Form()],
                  note: Annotated[str | None, Form(max_length=break_glass.NOTE_MAX)] = None):
    ctx = call.context()
    body = break_glass.FindingIn(finding=verdict, note=(note or "").strip() or None)
    await run_in_threadpool(break_glass.record_finding, ctx, event_id, body)
    return RedirectResponse("/console/audit/break-glass", status_code=303)
