"""Adverse events following immunization: HTTP only (registry/aefi/service)."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from api.deps import require
from api.routing import GatedRoute
from registry.aefi import codes, service
from registry.aefi.schemas import AdverseEventCounts, AdverseEventCreate, AdverseEventPage, AdverseEventView
from registry.context import ServiceContext
from security.access.permissions import Permission as P

router = APIRouter(route_class=GatedRoute, prefix="/api/v1", tags=["adverse events"])
Vaccine = Annotated[str | None, Query(max_length=16, pattern=r"^[A-Za-z0-9]+$")]
Lot = Annotated[str | None, Query(max_length=40, pattern=r"^[A-Za-z0-9./ -]+$")]
OnsetFrom = Annotated[date | None, Query(alias="onset_from")]
OnsetTo = Annotated[date | None, Query(alias="onset_to")]


@router.post("/immunizations/{dose_id}/adverse-events", status_code=201, response_model=AdverseEventView,
             summary="Report an adverse event following this dose (AEFI)")
def record(dose_id: uuid.UUID, body: AdverseEventCreate, ctx: Annotated[ServiceContext, Depends(require(P.AEFI_RECORD))]):
    return service.record(ctx, dose_id, body)


@router.get("/patients/{patient_id}/adverse-events", response_model=list[AdverseEventView],
            summary="A patient's adverse events following immunization")
def for_patient(patient_id: uuid.UUID, ctx: Annotated[ServiceContext, Depends(require(P.AEFI_READ))]):
    return service.list_for_patient(ctx, patient_id)


@router.get("/adverse-events", response_model=AdverseEventPage,
            summary="Adverse events in your scope, newest first, by vaccine and lot")
def list_events(request: Request, ctx: Annotated[ServiceContext, Depends(require(P.AEFI_READ))],
                vaccine: Vaccine = None, lot_number: Lot = None, onset_from: OnsetFrom = None, onset_to: OnsetTo = None,
                cursor: Annotated[str | None, Query(max_length=200)] = None,
                limit: Annotated[int | None, Query(ge=1, le=100)] = None):
    limit = request.app.state.runtime.settings.page_size.default if limit is None else limit
    page = service.list_in_scope(ctx, cursor=cursor, limit=limit, vaccine=vaccine, lot_number=lot_number,
                                 onset_from=onset_from, onset_to=onset_to)
    return AdverseEventPage(items=page.items, next_cursor=page.next_cursor)


@router.get("/adverse-events/counts", response_model=AdverseEventCounts,
            summary="Adverse event counts by vaccine and lot in your scope (nothing decrypted)")
def counts(ctx: Annotated[ServiceContext, Depends(require(P.AEFI_READ, action="aefi.count"))],
           vaccine: Vaccine = None, lot_number: Lot = None, onset_from: OnsetFrom = None, onset_to: OnsetTo = None):
    return service.counts(ctx, vaccine=vaccine, lot_number=lot_number, onset_from=onset_from, onset_to=onset_to)


@router.get("/adverse-events/codes", summary="The AEFI coded lists in force (symptoms, seriousness, outcomes)",
            description="Reference data, not patient data: readable by any staff role, like facilities, and not audited.")
def coded_lists(ctx: Annotated[ServiceContext, Depends(require(P.FACILITY_READ))]):
    return codes.current()
