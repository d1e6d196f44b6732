"""Due and overdue (defaulter) lists for outreach: HTTP only (registry/due_lists/service)."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from api.deps import require
from api.routing import GatedRoute
from registry.context import ServiceContext
from registry.due_lists import service
from registry.due_lists.schemas import DueList
from security.access.permissions import Permission as P

router = APIRouter(route_class=GatedRoute, prefix="/api/v1", tags=["field work"])
Code = Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9-]+$")]
From = Annotated[date | None, Query(alias="from", description="first day of the session(s) (default today, UTC+5)")]
To = Annotated[date | None, Query(alias="to", description="last day (default `from`; at most 92 days after it)")]
Cursor = Annotated[str | None, Query(max_length=200)]
Limit = Annotated[int | None, Query(ge=1, le=100)]
_DESCRIPTION = ("Children with a dose overdue, due, or recommended between `from` and `to`, with each dose's earliest, "
                "recommended and latest dates. Names and phone only for children in your capture scope.")


def _limit(request: Request, limit: int | None) -> int:
    return request.app.state.runtime.settings.page_size.default if limit is None else limit


@router.get("/facilities/{code}/due-list", response_model=DueList, summary="Due and overdue children of a facility",
            description=_DESCRIPTION)
def facility_due_list(code: Code, request: Request,
                      ctx: Annotated[ServiceContext, Depends(require(P.IMMUNIZATION_DUE_LIST))],
                      date_from: From = None, date_to: To = None, cursor: Cursor = None, limit: Limit = None):
    return service.due_list(ctx, "facility", code, date_from=date_from, date_to=date_to, cursor=cursor,
                            limit=_limit(request, limit))


@router.get("/union-councils/{code}/due-list", response_model=DueList,
            summary="Due and overdue children of a union council (officials)",
            description=_DESCRIPTION + " A union council's children are those whose home facility is in it.")
def union_council_due_list(code: Code, request: Request,
                           ctx: Annotated[ServiceContext, Depends(require(P.IMMUNIZATION_DUE_LIST))],
                           date_from: From = None, date_to: To = None, cursor: Cursor = None, limit: Limit = None):
    return service.due_list(ctx, "union_council", code, date_from=date_from, date_to=date_to, cursor=cursor,
                            limit=_limit(request, limit))
