"""Merges and unmerge for the data steward (issue 13 item 5, issue 14): the same services as
`GET /api/v1/linkage/merges` (`linkage.merges`), `GET /api/v1/linkage/patients/{id}/unmerge`
(`registry/linkage/unmerge_choice.py`: both records, the doses going back, the later doses to
tick; `linkage.view` per record) and `POST /api/v1/linkage/patients/{id}/unmerge`
(`linkage.unmerge`), through the same gate. Record ids travel in POST bodies only.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Form, Query
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from api.console.gate import ConsoleCall, Gate
from api.console.templating import render
from api.routing import GatedRoute
from registry.linkage import merge, unmerge_choice
from registry.linkage.steward_schemas import UnmergeRequest
from security.access.permissions import Permission as P

router = APIRouter(route_class=GatedRoute, prefix="/console/linkage/merges", include_in_schema=False)
PAGE = 20


@router.get("")
async def merges(call: Annotated[ConsoleCall, Gate(P.LINKAGE_MERGE, action="linkage.merges")],
                 cursor: Annotated[str | None, Query(max_length=200)] = None,
                 done: Annotated[str | None, Query(max_length=16)] = None):
    ctx = call.context()
    items, nxt = await run_in_threadpool(merge.list_merges, ctx, cursor, PAGE)
    return render(call.request, "linkage_merges.html", me=call.principal, csrf=call.csrf, items=items, next_cursor=nxt,
                  first_page=cursor is None, unmerged=done == "unmerged")


@router.post("/choice")
async def choice(call: Annotated[ConsoleCall, Gate(P.LINKAGE_MERGE, action="linkage.view")],
                 patient_id: Annotated[uuid.UUID, Form()]):
    ctx = call.context()
    view = await run_in_threadpool(unmerge_choice.choice, ctx, patient_id)
    return render(call.request, "linkage_unmerge.html", me=call.principal, csrf=call.csrf, choice=view)


@router.post("/unmerge")
async def unmerge(call: Annotated[ConsoleCall, Gate(P.LINKAGE_MERGE, action="linkage.unmerge")],
                  patient_id: Annotated[uuid.UUID, Form()],
                  move_dose_ids: Annotated[list[uuid.UUID], Form(max_length=200)] = [],  # noqa: B006 (FastAPI copies it)
                  candidate_status: Annotated[Literal["not_same", "unsure"], Form()] = "not_same"):
    ctx = call.context()
    body = UnmergeRequest(move_dose_ids=move_dose_ids, candidate_status=candidate_status)
    await run_in_threadpool(merge.unmerge, ctx, patient_id, body)
    return RedirectResponse("/console/linkage/merges?done=unmerged", status_code=303)
