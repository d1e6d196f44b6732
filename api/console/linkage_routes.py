"""The data steward's review queue and one candidate pair side by side, with the decision forms
(issue 13 item 5, issue 14): the same services as `GET /api/v1/linkage/candidates`
(`linkage.queue`), `GET /api/v1/linkage/candidates/{id}` (`linkage.view`, one event per record
viewed) and `POST /api/v1/linkage/candidates/{id}/decision` (`linkage.decide`), through the same
gate. The pair's version travels in a hidden field where the API takes `If-Match`; a decision that
lost a race is the service's 409 `already_decided`, rendered as a page. The candidate id travels in
POST bodies (the pair page shows patient data), the queue's opaque cursor in the query string.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Form, Query
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from api.console.gate import ConsoleCall, Gate
from api.console.templating import render
from api.routing import GatedRoute
from registry import errors as e
from registry.linkage import decisions, queue, remote_queue
from registry.linkage.steward_schemas import NOTE_MAX, Decision
from security.access.permissions import Permission as P

router = APIRouter(route_class=GatedRoute, prefix="/console/linkage", include_in_schema=False)
PAGE = 20
DONE = {"merged", "not_same", "unsure"}
# the fields compared side by side, in the order a steward reads them: (label, attribute path)
FIELDS = (("Given name", "given_name"), ("Family name", "family_name"), ("Birth date", "birth_date"), ("Sex", "sex"),
          ("Guardian", "guardian.name"), ("Guardian's CNIC", "guardian.cnic"), ("B-form number", "bform"),
          ("Phone", "phone"), ("Health ID", "health_id"), ("District", "district"), ("Home facility", "home_facility"))
NEVER_EQUAL = {"health_id"}  # two records always have two health IDs: not a difference worth marking


@router.get("")
async def review_queue(call: Annotated[ConsoleCall, Gate(P.LINKAGE_REVIEW)],
                       status: Annotated[Literal["open", "unsure"], Query()] = "open",
                       cursor: Annotated[str | None, Query(max_length=200)] = None,
                       done: Annotated[str | None, Query(max_length=16)] = None):
    ctx = call.context()
    page = await run_in_threadpool(queue.review_queue, ctx, (status,), cursor, PAGE)
    remote = None
    if status == "open" and cursor is None and ctx.runtime.federation is not None:  # a provincial node: pairs with a
        # record another node holds, from the national comparer (registry/linkage/remote_queue.py)
        remote = await run_in_threadpool(remote_queue.remote_queue, ctx, PAGE)
    return render(call.request, "linkage_queue.html", me=call.principal, csrf=call.csrf, page=page, status=status,
                  first_page=cursor is None, done=done if done in DONE else None, remote=remote)


def _value(record, path: str):
    value = record
    for part in path.split("."):
        value = getattr(value, part, None) if value is not None else None
    return value


def comparison(pair) -> list[dict]:
    """One row per field: both values (None where withheld or empty) and whether they differ
    (only when both are shown: a withheld value is not a difference)."""
    rows = []
    for label, path in FIELDS:
        left, right = _value(pair.left.record, path), _value(pair.right.record, path)
        if left is None and right is None:
            continue
        rows.append({"label": label, "path": path, "left": left, "right": right,
                     "differs": path not in NEVER_EQUAL and left is not None and right is not None and left != right})
    return rows


@router.post("/pair")
async def pair(call: Annotated[ConsoleCall, Gate(P.LINKAGE_REVIEW, action="linkage.view")],
               candidate_id: Annotated[uuid.UUID, Form()]):
    ctx = call.context()
    view = await run_in_threadpool(queue.view_pair, ctx, candidate_id)
    # a record may survive only if the other one (the one replaced) is in the steward's capture scope
    survivors = [side for side, other in ((view.left, view.right), (view.right, view.left))
                 if other.record.access == "capture"]
    return render(call.request, "linkage_pair.html", me=call.principal, csrf=call.csrf, pair=view, rows=comparison(view),
                  survivors=survivors, can_decide=call.principal.can(P.LINKAGE_DECIDE), note_max=NOTE_MAX)


@router.post("/decide")
async def decide(call: Annotated[ConsoleCall, Gate(P.LINKAGE_DECIDE)], candidate_id: Annotated[uuid.UUID, Form()],
                 version: Annotated[int, Form(ge=1, le=2**31)], decision: Annotated[Literal["same", "not_same", "unsure"], Form()],
                 survivor_id: Annotated[uuid.UUID | None, Form()] = None,
                 note: Annotated[str | None, Form(max_length=NOTE_MAX)] = None):
    ctx = call.context()
    try:
        body = Decision(decision=decision, survivor_id=survivor_id if decision == "same" else None,
                        note=(note or "").strip() or None)
    except ValidationError:
        raise e.InvalidInput("check the field: note", field="note") from None
    result = await run_in_threadpool(decisions.decide, ctx, candidate_id, f'"{version}"', body)
    return RedirectResponse(f"/console/linkage?done={result.status}", status_code=303)


@router.post("/remote-decision")
async def remote_decision(call: Annotated[ConsoleCall, Gate(P.LINKAGE_DECIDE)], candidate_id: Annotated[uuid.UUID, Form()],
                          version: Annotated[int, Form(ge=1, le=2**31)],
                          decision: Annotated[Literal["not_same", "unsure"], Form()]):
    """A pair with another node's record (remote_queue.decide, as `POST /api/v1/linkage/remote-candidates/{id}/decision`)."""
    ctx = call.context()
    result = await run_in_threadpool(remote_queue.decide, ctx, candidate_id, f'"{version}"',
                                     remote_queue.RemoteDecision(decision=decision))
    return RedirectResponse(f"/console/linkage?done={result.status}", status_code=303)
