"""Due and defaulter lists per facility or union council, for outreach sessions, printable on A4:
the same service as `GET /api/v1/facilities/{code}/due-list` and
`GET /api/v1/union-councils/{code}/due-list` (`immunization.due_list`), through the same gate.
Names and phones appear only for children in the caller's capture scope, as in the API."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Form
from starlette.concurrency import run_in_threadpool

from api.console.gate import ConsoleCall, Gate
from api.console.templating import render
from api.deps import runtime
from api.routing import GatedRoute
from registry.due_lists import service
from security.access.permissions import Permission as P

router = APIRouter(route_class=GatedRoute, prefix="/console/due", include_in_schema=False)


@router.get("")
def due_form(call: Annotated[ConsoleCall, Gate(P.IMMUNIZATION_DUE_LIST, audited=False)]):
    p = call.principal
    kind = "facility" if p.scope.level == "facility" else "union_council"
    f = {"kind": kind, "code": p.scope.code if kind == "facility" else ""}
    return render(call.request, "due.html", me=p, csrf=call.csrf, f=f)


@router.post("")
async def due_list(call: Annotated[ConsoleCall, Gate(P.IMMUNIZATION_DUE_LIST)],
                   kind: Annotated[Literal["facility", "union_council"], Form()],
                   code: Annotated[str, Form(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9-]+$")],
                   date_from: Annotated[date | None, Form()] = None, date_to: Annotated[date | None, Form()] = None,
                   cursor: Annotated[str | None, Form(max_length=200)] = None):
    ctx = call.context()
    size = runtime(call.request).settings.page_size.default
    page = await run_in_threadpool(lambda: service.due_list(ctx, kind, code, date_from=date_from, date_to=date_to,
                                                            cursor=cursor or None, limit=size))
    f = {"kind": kind, "code": code, "date_from": date_from, "date_to": date_to}
    return render(call.request, "due.html", me=call.principal, csrf=call.csrf, f=f, page=page)
