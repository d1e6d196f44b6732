"""Dose routes."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Response

from api.deps import require
from api.hot_gate import hot
from api.responses import json_response
from api.routing import GatedRoute
from registry.context import ServiceContext
from registry.immunizations import async_record, service
from registry.immunizations.schemas import DoseCorrection, DoseCreate, DoseView, DoseVoid
from registry.patients.service import etag
from security.access.permissions import Permission as P

router = APIRouter(route_class=GatedRoute, prefix="/api/v1", tags=["immunizations"])
IfMatch = Annotated[str | None, Header(alias="If-Match", max_length=64)]


@router.post("/patients/{patient_id}/immunizations", status_code=201, response_model=DoseView, summary="Record a dose")
@hot  # served without FastAPI's dependency resolution (api/hot_gate.py); an Idempotency-Key takes the normal path
async def record(patient_id: uuid.UUID, body: DoseCreate,
                 ctx: Annotated[ServiceContext, Depends(require(P.IMMUNIZATION_RECORD, on_loop=True))]):
    view = await async_record.record_async(ctx, patient_id, body)  # on the event loop on PostgreSQL (issue 17)
    return json_response(view, status_code=201, headers={"ETag": etag(view.version)})


@router.get("/patients/{patient_id}/immunizations", response_model=list[DoseView], summary="List a patient's doses")
def list_doses(patient_id: uuid.UUID, ctx: Annotated[ServiceContext, Depends(require(P.IMMUNIZATION_READ))]):
    return service.list_for_patient(ctx, patient_id)


@router.post("/immunizations/{dose_id}/void", response_model=DoseView, summary="Void a dose entered in error (kept, never deleted)")
def void(dose_id: uuid.UUID, body: DoseVoid, ctx: Annotated[ServiceContext, Depends(require(P.IMMUNIZATION_AMEND, action="immunization.void"))],
         if_match: IfMatch = None):
    return service.void(ctx, dose_id, if_match, body)


@router.post("/immunizations/{dose_id}/correct", status_code=201, response_model=DoseView,
             summary="Correct a dose: the old record is superseded by a new one")
def correct(dose_id: uuid.UUID, body: DoseCorrection,
            ctx: Annotated[ServiceContext, Depends(require(P.IMMUNIZATION_AMEND, action="immunization.correct"))],
            response: Response, if_match: IfMatch = None):
    view = service.correct(ctx, dose_id, if_match, body)
    response.headers["ETag"] = etag(view.version)
    return view
