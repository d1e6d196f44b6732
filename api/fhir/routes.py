"""FHIR R4 at /fhir/R4: HTTP only. Every route is gated by the same `require(permission)` as its
/api/v1 twin and calls registry/fhir/service, which calls the /api/v1 services: same scope,
purpose of use, break-glass and audit (see docs/fhir.md).

`gate()` wraps `require()` with content negotiation (api/fhir/negotiation.py): an unsupported
`_format` or `Accept` is 406, an unsupported body media type 415, each an audited refusal. A new
FHIR route should take `gate(...)` rather than `require(...)`.
Every URL the server hands out is absolute (search links, `fullUrl`, `Location`,
`implementation.url`) and resolves: `Location` points at `_history/{version}`, served by vread.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Body, Depends, Header, Request
from fastapi.concurrency import run_in_threadpool

from api.deps import Public, require
from api.fhir import negotiation
from api.fhir.responses import PREFIX, fhir_response
from api.routing import GatedRoute
from registry.context import ServiceContext
from registry.fhir import bundle_async, capability, params, service
from registry.schedules.service import ACTION as SCHEDULE_ACTION
from security.access.permissions import Permission as P

router = APIRouter(route_class=GatedRoute, prefix=PREFIX, tags=["fhir"])
Resource = Annotated[dict, Body(description="a FHIR R4 resource (application/fhir+json)")]
_STARTED = datetime.now(UTC).isoformat(timespec="seconds")


def gate(permission: P, *, action: str | None = None, body: str | None = None, on_loop=False):
    """`require(permission)`, then content negotiation; `body`: "resource", "form" or None;
    `on_loop` as `require`'s (api/deps.py)."""
    inner = require(permission, action=action, on_loop=on_loop)

    # `ctx` is declared by its default: with postponed annotations, an annotation naming the local
    # `inner` could not be resolved by FastAPI
    async def fhir_gate(request: Request, ctx=Depends(inner)) -> ServiceContext:
        negotiation.negotiate(request, body)
        return ctx

    return fhir_gate


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + PREFIX


def _headers(request: Request, res: dict) -> dict:
    version = (res.get("meta") or {}).get("versionId")
    if version is None:
        return {}
    return {"ETag": f'W/"{version}"',
            "Location": f"{_base(request)}/{res['resourceType']}/{res['id']}/_history/{version}"}


def _query(request: Request, rtype: str, pairs: list[tuple[str, str]]) -> params.Query:
    s = request.app.state.runtime.settings
    return params.parse_query(pairs, capability.param_names(rtype), default_count=s.page_size.default,
                              max_count=s.page_size.max)


def _searchset(request: Request, rtype: str, q: params.Query, result: service.SearchResult) -> dict:
    """A searchset: `total` as `_total` and `_summary` ask, only the total for `_count=0` or
    `_summary=count`, absolute links and fullUrls."""
    flat = [(k, v) for k, values in q.params.items() for v in values]
    flat += [("_summary", "count")] if q.count_only else [("_count", str(q.count))]
    flat += [("_total", q.total)] if q.total else []
    url = f"{_base(request)}/{rtype}"
    links = [{"relation": "self", "url": f"{url}?{urlencode(flat + ([('_cursor', q.cursor)] if q.cursor else []))}"}]
    if result.next_cursor and not q.count_only:
        links.append({"relation": "next", "url": f"{url}?{urlencode(flat + [('_cursor', result.next_cursor)])}"})
    body = {"resourceType": "Bundle", "type": "searchset"}
    if q.shows_total(result.total):
        body["total"] = result.total
    body["link"] = links
    if not q.count_only:
        body["entry"] = [{"fullUrl": f"{_base(request)}/{r['resourceType']}/{r['id']}", "resource": r,
                          "search": {"mode": "match"}} for r in result.resources]
    return body


@router.get("/metadata", dependencies=[Public], summary="CapabilityStatement: exactly what this server supports")
def metadata(request: Request):
    negotiation.negotiate(request)
    return fhir_response(request, capability.capability_statement(request.app.version, _STARTED, _base(request)))


async def _query_and_form(request: Request) -> list[tuple[str, str]]:
    """Search parameters of a POST `_search`: the URL's and the form body's, in that order."""
    return list(request.query_params.multi_items()) + [(k, str(v)) for k, v in (await request.form()).multi_items()]


def _read_response(request: Request, res: dict):
    return fhir_response(request, res, headers={"ETag": f'W/"{res["meta"]["versionId"]}"'})


# ---------------------------------------------------------------- Patient

@router.get("/Patient/{patient_id}", summary="Read a Patient (capture scope, or break-glass)")
def read_patient(patient_id: str, request: Request, ctx: Annotated[ServiceContext, Depends(gate(P.PATIENT_READ))]):
    return _read_response(request, service.read_patient(ctx, patient_id))


@router.get("/Patient/{patient_id}/_history/{version_id}",
            summary="vread a Patient: the current version (NHR keeps no FHIR history; an earlier version is 404)")
def vread_patient(patient_id: str, version_id: str, request: Request,
                  ctx: Annotated[ServiceContext, Depends(gate(P.PATIENT_READ))]):
    return _read_response(request, service.vread(service.read_patient(ctx, patient_id), version_id))


def _search(kind: str, find, request: Request, ctx: ServiceContext, pairs: list[tuple[str, str]]):
    """One searchset for GET and POST `_search` alike: parse the parameters, run `find`."""
    q = _query(request, kind, pairs)
    return fhir_response(request, _searchset(request, kind, q, find(ctx, q)))


@router.get("/Patient", summary="Search Patients: by identifier (search scope) or by birthdate, gender, address (capture scope)")
def search_patients(request: Request, ctx: Annotated[ServiceContext, Depends(gate(P.PATIENT_SEARCH))]):
    return _search("Patient", service.search_patients, request, ctx, list(request.query_params.multi_items()))


@router.post("/Patient/_search", summary="Search Patients with the parameters in a form body (keeps identifiers out of URLs)")
async def search_patients_post(request: Request,
                               ctx: Annotated[ServiceContext, Depends(gate(P.PATIENT_SEARCH, body="form"))]):
    return await run_in_threadpool(_search, "Patient", service.search_patients, request, ctx, await _query_and_form(request))


@router.post("/Patient", status_code=201, summary="Create a Patient (conditional with If-None-Exist: identifier=system|value)")
def create_patient(body: Resource, request: Request,
                   ctx: Annotated[ServiceContext, Depends(gate(P.PATIENT_CREATE, body="resource"))],
                   if_none_exist: Annotated[str | None, Header(alias="If-None-Exist", max_length=200)] = None,
                   confirm: Annotated[bool, Header(alias="X-Confirm-Not-Duplicate")] = False):
    status, res = service.create_patient(ctx, body, if_none_exist, confirm_not_duplicate=confirm)
    return fhir_response(request, res, status, _headers(request, res))


# ---------------------------------------------------------------- Immunization

@router.get("/Immunization/{dose_id}", summary="Read an Immunization")
def read_immunization(dose_id: str, request: Request,
                      ctx: Annotated[ServiceContext, Depends(gate(P.IMMUNIZATION_READ))]):
    return _read_response(request, service.read_immunization(ctx, dose_id))


@router.get("/Immunization/{dose_id}/_history/{version_id}",
            summary="vread an Immunization: the current version (NHR keeps no FHIR history; an earlier version is 404)")
def vread_immunization(dose_id: str, version_id: str, request: Request,
                       ctx: Annotated[ServiceContext, Depends(gate(P.IMMUNIZATION_READ))]):
    return _read_response(request, service.vread(service.read_immunization(ctx, dose_id), version_id))


@router.get("/Immunization", summary="Search Immunizations by patient, date, vaccine-code, status")
def search_immunizations(request: Request, ctx: Annotated[ServiceContext, Depends(gate(P.IMMUNIZATION_READ))]):
    return _search("Immunization", service.search_immunizations, request, ctx, list(request.query_params.multi_items()))


@router.post("/Immunization/_search", summary="Search Immunizations with the parameters in a form body")
async def search_immunizations_post(request: Request,
                                    ctx: Annotated[ServiceContext, Depends(gate(P.IMMUNIZATION_READ, body="form"))]):
    return await run_in_threadpool(_search, "Immunization", service.search_immunizations, request, ctx,
                                   await _query_and_form(request))


@router.post("/Immunization", status_code=201, summary="Record a dose as an Immunization")
def create_immunization(body: Resource, request: Request,
                        ctx: Annotated[ServiceContext, Depends(gate(P.IMMUNIZATION_RECORD, body="resource"))]):
    res = service.create_immunization(ctx, body)
    return fhir_response(request, res, 201, _headers(request, res))


# ---------------------------------------------------------------- ImmunizationRecommendation

ScheduleGate = Annotated[ServiceContext, Depends(gate(P.IMMUNIZATION_READ, action=SCHEDULE_ACTION))]


@router.get("/ImmunizationRecommendation/{patient_id}", summary="A patient's forecast (id = the patient's id)")
def read_recommendation(patient_id: str, request: Request, ctx: ScheduleGate):
    return fhir_response(request, service.read_recommendation(ctx, patient_id))


@router.get("/ImmunizationRecommendation", summary="Search ImmunizationRecommendation by patient")
def search_recommendations(request: Request, ctx: ScheduleGate):
    q = _query(request, "ImmunizationRecommendation", list(request.query_params.multi_items()))
    return fhir_response(request, _searchset(request, "ImmunizationRecommendation", q, service.search_recommendations(ctx, q)))


# ---------------------------------------------------------------- transaction / batch

async def _on_the_loop(request: Request, principal, rt) -> bool:
    """A Bundle of Patient (unconditional) and Immunization creates runs on the event loop
    (PostgreSQL; registry/fhir/bundle_async.py `fits_on_loop`) when `NHR_FHIR_BUNDLE_ON_LOOP` is true."""
    if not rt.settings.fhir.bundle_on_loop:
        return False
    try:
        body = json.loads(await request.body())
    except ValueError:
        return False
    return bundle_async.fits_on_loop(body, principal)


@router.post("", summary="transaction (all or nothing) or batch (each entry on its own) Bundle of Patient and Immunization")
async def transaction(body: Resource, request: Request,
                      ctx: Annotated[ServiceContext, Depends(gate(P.PATIENT_CREATE, body="resource",
                                                                  on_loop=_on_the_loop))]):
    return fhir_response(request, await bundle_async.process_async(ctx, body, _base(request)))
