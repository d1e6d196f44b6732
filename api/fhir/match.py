"""FHIR `POST /fhir/R4/Patient/$match`: HTTP only; registry/fhir/match does the work.
Gated like a search (patient:search): candidates within the caller's search scope."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request

from api.deps import require
from api.fhir.responses import PREFIX, fhir_response
from api.routing import GatedRoute
from registry.context import ServiceContext
from registry.fhir import match
from security.access.permissions import Permission as P

router = APIRouter(route_class=GatedRoute, prefix=PREFIX, tags=["fhir"])


@router.post("/Patient/$match", summary="Patient/$match: likely records of this child (search scope), graded and scored")
def patient_match(body: Annotated[dict, Body(description="a FHIR Parameters resource with `resource` (Patient), "
                                                        "`onlyCertainMatches`, `count`")],
                  request: Request, ctx: Annotated[ServiceContext, Depends(require(P.PATIENT_SEARCH))]):
    base = str(request.base_url).rstrip("/") + PREFIX
    return fhir_response(request, match.bundle(base, match.match(ctx, body)))
