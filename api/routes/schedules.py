"""A patient's immunization schedule: recorded doses judged, future doses dated."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from api.deps import require
from api.routing import GatedRoute
from registry.context import ServiceContext
from registry.schedules import service
from registry.schedules.schemas import PatientSchedule
from security.access.permissions import Permission as P

router = APIRouter(route_class=GatedRoute, prefix="/api/v1", tags=["immunizations"])


@router.get("/patients/{patient_id}/schedule", response_model=PatientSchedule,
            summary="A patient's schedule: each dose valid or invalid, each future dose due, overdue or not yet due")
def patient_schedule(patient_id: uuid.UUID,
                     ctx: Annotated[ServiceContext, Depends(require(P.IMMUNIZATION_READ, action=service.ACTION))],
                     as_of: Annotated[date | None, Query(description="evaluation date (default today)")] = None):
    return service.for_patient(ctx, patient_id, as_of)
