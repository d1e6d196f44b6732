"""Find a child by identifier and open the child's record (health officials and clinic workers).

The same services as the API, through the same gate (api/console/gate.py): `patients.search`
(`POST /api/v1/patients/search`), then `patients.read`, `immunizations.list_for_patient` and
`schedules.for_patient` (the three GETs a clinic app makes), each writing its own audit event.
Identifiers and the patient id travel in POST bodies only. Break-glass is a separate, marked form
whose reason goes where the API's `X-Break-Glass-Reason` header goes.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Form
from starlette.concurrency import run_in_threadpool

from api.console.gate import ConsoleCall, Gate
from api.console.templating import render
from api.routing import GatedRoute
from registry.immunizations import service as immunizations
from registry.nodes import service as nodes
from registry.patients import service as patients
from registry.schedules import service as schedules
from security.access.permissions import Permission as P

router = APIRouter(route_class=GatedRoute, prefix="/console/children", include_in_schema=False)

Reason = Annotated[str | None, Form(max_length=500)]


@router.get("")
def find_form(call: Annotated[ConsoleCall, Gate(P.PATIENT_SEARCH, audited=False)]):
    return render(call.request, "find.html", me=call.principal, csrf=call.csrf)


@router.post("/find")
async def find(call: Annotated[ConsoleCall, Gate(P.PATIENT_SEARCH)], system: Annotated[Literal["nhr", "bform", "cnic"], Form()],
               value: Annotated[str, Form(min_length=1, max_length=32)], reason: Reason = None):
    ctx = call.context(break_glass_reason=reason)
    fed = nodes.federation(ctx)  # a provincial node with peers asks them too, as the API does (docs/nodes.md)
    matches = await (nodes.federated_search(ctx, fed, system, value) if fed is not None
                     else run_in_threadpool(patients.search, ctx, system, value))
    return render(call.request, "find.html", me=call.principal, csrf=call.csrf, matches=matches, searched=True,
                  break_glass=ctx.access.break_glass, reason=ctx.access.break_glass_reason)


@router.post("/record")
async def record(call: Annotated[ConsoleCall, Gate(P.PATIENT_READ)], patient_id: Annotated[uuid.UUID, Form()],
                 reason: Reason = None):
    ctx = call.context(break_glass_reason=reason)

    def load():
        child = patients.read(ctx, patient_id)
        doses = immunizations.list_for_patient(ctx, patient_id) if call.principal.can(P.IMMUNIZATION_READ) else []
        status = schedules.for_patient(ctx, patient_id) if call.principal.can(P.IMMUNIZATION_READ) else None
        return child, doses, status

    child, doses, status = await run_in_threadpool(load)
    return render(call.request, "child.html", me=call.principal, csrf=call.csrf, child=child, doses=doses, status=status,
                  break_glass=ctx.access.break_glass)
