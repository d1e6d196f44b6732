"""Audit event search for auditors: every filter of `GET /api/v1/audit/events`, through the same
service (`audit.query`, one event per page, scoped to the auditor's jurisdiction by the repository)
and the same gate. Filters and the page cursor travel in POST bodies (a patient id is a search value)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Form
from starlette.concurrency import run_in_threadpool

from api.console.gate import ConsoleCall, Gate
from api.console.templating import render
from registry.audit_log import service
from registry.audit_log.repository import EventFilter
from security.access.permissions import Permission as P
from security.audit.trail import OUTCOMES

router = APIRouter(prefix="/console/audit", include_in_schema=False)
PAGE = 50

Text = Annotated[str | None, Form(max_length=48)]


def _form(call: ConsoleCall, **context):
    return render(call.request, "audit.html", me=call.principal, csrf=call.csrf, outcomes=OUTCOMES, f=context.pop("f", {}),
                  **context)


@router.get("")
def audit_form(call: Annotated[ConsoleCall, Gate(P.AUDIT_READ, audited=False)]):
    return _form(call)


@router.post("")
async def audit_search(call: Annotated[ConsoleCall, Gate(P.AUDIT_READ)],
                       patient_id: Annotated[uuid.UUID | None, Form()] = None,
                       actor_user_id: Annotated[uuid.UUID | None, Form()] = None,
                       action: Text = None,
                       outcome: Annotated[Literal[OUTCOMES] | None, Form()] = None,  # type: ignore[valid-type]
                       since: Annotated[date | None, Form()] = None,
                       until: Annotated[date | None, Form()] = None,
                       break_glass: Annotated[Literal["yes", "no"] | None, Form()] = None,
                       facility: Annotated[str | None, Form(max_length=32)] = None,
                       purpose_of_use: Annotated[str | None, Form(pattern="^[A-Z]{2,16}$")] = None,
                       cursor: Annotated[str | None, Form(max_length=200)] = None):
    ctx = call.context()
    f = EventFilter(patient_id, actor_user_id, action or None, outcome or None,
                    datetime.combine(since, time.min, UTC) if since else None,
                    datetime.combine(until, time.min, UTC) + timedelta(days=1) if until else None,
                    {"yes": True, "no": False}.get(break_glass or ""), facility or None, purpose_of_use or None)
    page = await run_in_threadpool(service.search, ctx, f, cursor or None, PAGE)
    shown = {"patient_id": patient_id, "actor_user_id": actor_user_id, "action": action, "outcome": outcome, "since": since,
             "until": until, "break_glass": break_glass, "facility": facility, "purpose_of_use": purpose_of_use}
    return _form(call, page=page, f={k: v for k, v in shown.items() if v not in (None, "")})
