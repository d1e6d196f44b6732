"""Offline sync routes (issue 5): the batch upload and the facility changes feed. HTTP only."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from api.deps import require
from api.routing import GatedRoute
from registry.context import ServiceContext
from registry.sync import batch_async, changes
from registry.sync.schemas import BatchResult, BatchUpload, ChangesPage
from security.access.permissions import Permission as P

router = APIRouter(route_class=GatedRoute, prefix="/api/v1/sync", tags=["sync"])


async def _doses_only(request: Request, principal, rt) -> bool:
    """A batch of doses and registrations runs on the event loop (PostgreSQL;
    registry/sync/batch_async.py `fits_on_loop`), unless `NHR_SYNC_BATCH_ON_LOOP` is false."""
    if not rt.settings.sync.batch_on_loop:
        return False
    try:
        body = json.loads(await request.body())
    except ValueError:
        return False
    return isinstance(body, dict) and batch_async.fits_on_loop(body.get("items"), principal, rt.settings.sync.batch_max_items)


@router.post("/batch", response_model=BatchResult, response_model_exclude_none=True, summary="Upload a device's day of work",
             description="Patients, doses, corrections and voids, in order, each with its own result (`created`, "
                         "`duplicate`, `rejected` with a reason and field). Safe to resend in full; send an "
                         "`Idempotency-Key` too. At most `NHR_SYNC_BATCH_MAX_ITEMS` (500) items.")
async def upload(body: BatchUpload, ctx: Annotated[ServiceContext, Depends(require(P.SYNC_UPLOAD, on_loop=_doses_only))]):
    return await batch_async.upload_async(ctx, body.items)


@router.get("/changes", response_model=ChangesPage, summary="Changes feed of a facility's catchment",
            description="Patients whose home facility this is, and their doses, from an opaque `since` cursor. Keep "
                        "the `next_cursor` of the page with `has_more: false` for the next download; entries of the "
                        "last few minutes are sent again, deduplicate them by (type, id, version).")
def feed(ctx: Annotated[ServiceContext, Depends(require(P.SYNC_READ))],
         facility: Annotated[str, Query(min_length=1, max_length=40)],
         since: Annotated[str | None, Query(max_length=300)] = None,
         limit: Annotated[int, Query(ge=1, le=500)] = 100):
    return changes.changes(ctx, facility, since, limit)
