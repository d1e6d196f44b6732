"""The auditor's query of the audit log (tamper evidence and the workbench come in issue 3)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from api.deps import require
from api.routing import GatedRoute
from registry.audit_log import service
from registry.audit_log.repository import EventFilter
from registry.audit_log.schemas import AuditEventPage
from registry.context import ServiceContext
from security.access.permissions import Permission as P
from security.audit.trail import OUTCOMES

router = APIRouter(route_class=GatedRoute, prefix="/api/v1/audit", tags=["audit"])


@router.get("/events", response_model=AuditEventPage, summary="Search audit events in your jurisdiction")
def events(
    ctx: Annotated[ServiceContext, Depends(require(P.AUDIT_READ))],
    patient_id: uuid.UUID | None = None,
    actor_user_id: uuid.UUID | None = None,
    action: Annotated[str | None, Query(max_length=48, openapi_examples={"reads": {"value": "patient.read"}})] = None,
    outcome: Annotated[str | None, Query(pattern="^(" + "|".join(OUTCOMES) + ")$")] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    break_glass: bool | None = None,
    facility: Annotated[str | None, Query(max_length=32, description="the actor's facility code",
                                          openapi_examples={"facility": {"value": "F-LAH-0001"}})] = None,
    purpose_of_use: Annotated[str | None, Query(pattern="^[A-Z]{2,16}$", description="HL7 v3 PurposeOfUse code",
                                                openapi_examples={"emergency": {"value": "ETREAT"}})] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
):
    f = EventFilter(patient_id, actor_user_id, action, outcome, since, until, break_glass, facility, purpose_of_use)
    return service.search(ctx, f, cursor, limit)
