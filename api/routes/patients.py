"""Patient routes: HTTP only. Scope, audit and encryption happen in registry/patients/service."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from api import problems
from api.deps import require
from api.hot_gate import hot
from api.responses import json_response
from api.routing import GatedRoute
from registry.context import ServiceContext
from registry.nodes import service as nodes
from registry.patients import async_register, service
from registry.patients.schemas import PatientCreate, PatientMatch, PatientPage, PatientRegistered, PatientUpdate, PatientView
from security.access.permissions import Permission as P

router = APIRouter(route_class=GatedRoute, prefix="/api/v1/patients", tags=["patients"])


class IdentifierSearch(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"system": "bform", "value": "35202-7654321-2"}]})
    system: Literal["nhr", "bform", "cnic"] = Field(description="nhr = the registry's health ID; cnic also finds children by their guardian's CNIC")
    value: str = Field(min_length=1, max_length=32)


def _limit(request: Request, limit: int | None) -> int:
    s = request.app.state.runtime.settings
    return s.page_size.default if limit is None else limit


@router.post("", status_code=201, response_model=PatientRegistered, summary="Register a patient",
             description="The response carries the patient's `access_code` for the citizen view, shown this once only.")
@hot  # served without FastAPI's dependency resolution (api/hot_gate.py); an Idempotency-Key takes the normal path
async def register(body: PatientCreate, ctx: Annotated[ServiceContext, Depends(require(P.PATIENT_CREATE, on_loop=True))]):
    view = await async_register.register_async(ctx, body)  # on the event loop on PostgreSQL (issue 17)
    return json_response(view, status_code=201, headers={"ETag": service.etag(view.version),
                                                         "Location": f"/api/v1/patients/{view.id}"})


@router.get("", response_model=PatientPage, summary="List patients in your capture scope")
def list_patients(request: Request, ctx: Annotated[ServiceContext, Depends(require(P.PATIENT_LIST))],
                  cursor: Annotated[str | None, Query(max_length=200)] = None,
                  limit: Annotated[int | None, Query(ge=1, le=100)] = None):
    page = service.list_patients(ctx, cursor, _limit(request, limit))
    return PatientPage(items=page.items, next_cursor=page.next_cursor)


@router.post("/search", response_model=list[PatientMatch], response_model_exclude_none=True,
             summary="Find a patient by an exact identifier (search scope)",
             description="POST so that the identifier never appears in a URL or an access log. Matches outside your "
                         "capture scope (`access: search`) carry identity confirmation only: no contact details or "
                         "national ID numbers.")
@hot  # served without FastAPI's dependency resolution (api/hot_gate.py)
async def search(body: IdentifierSearch, ctx: Annotated[ServiceContext, Depends(require(P.PATIENT_SEARCH))]):
    fed = nodes.federation(ctx)  # a provincial node with peers also asks them (registry/nodes, docs/nodes.md)
    if fed is not None:
        return json_response(await nodes.federated_search(ctx, fed, body.system, body.value), exclude_none=True)
    return json_response(await service.search_async(ctx, body.system, body.value), exclude_none=True)


@router.get("/{patient_id}", response_model=PatientView, summary="Read a patient (capture scope, or break-glass)",
            responses={301: {"description": "the record was merged into another by a data steward: `Location` and the "
                                            "problem's `merged_into` name the surviving record"}})
@hot
async def read(patient_id: uuid.UUID, ctx: Annotated[ServiceContext, Depends(require(P.PATIENT_READ))], request: Request):
    view = await service.read_async(ctx, patient_id)
    if view.merged_into is not None:  # issue 13: the id still resolves, to its survivor
        return problems.problem(301, "merged", "Record merged", "this record was merged into another; the surviving "
                                "record is at Location", request, headers={"Location": f"/api/v1/patients/{view.merged_into}"},
                                extensions={"merged_into": str(view.merged_into)})
    return json_response(view, headers={"ETag": service.etag(view.version)})


@router.patch("/{patient_id}", response_model=PatientView, summary="Update a patient (needs If-Match)")
def update(patient_id: uuid.UUID, body: PatientUpdate, ctx: Annotated[ServiceContext, Depends(require(P.PATIENT_UPDATE))],
           response: Response, if_match: Annotated[str | None, Header(alias="If-Match", max_length=64)] = None):
    view = service.update(ctx, patient_id, if_match, body)
    response.headers["ETag"] = service.etag(view.version)
    return view
