"""FHIR Bulk Data `$export` (https://hl7.org/fhir/uv/bulkdata/export.html), system and Patient
level, for health officials within their jurisdiction. Asynchronous: the kick-off answers 202
with a status URL in `Content-Location`; polling it answers 202 with `X-Progress` while the
snapshot is being taken, then 200 with the manifest; each file is `application/fhir+ndjson`;
`DELETE` on the status URL cancels. Every request writes one audit event."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from api.deps import require
from api.routing import GatedRoute
from registry.bulk import export
from registry.context import ServiceContext
from registry.errors import InvalidInput
from security.access.permissions import Permission as P
from security.audit import trail as audit

router = APIRouter(route_class=GatedRoute, prefix="/fhir/R4", tags=["fhir-bulk"])
NDJSON = "application/fhir+ndjson"
_FORMATS = {NDJSON, "application/ndjson", "ndjson"}
_KICKOFF_DOC = ("Starts an export of the Patient and Immunization resources in your jurisdiction. Needs "
                "`Prefer: respond-async`. `_type`: Patient, Immunization (default both); `_since`: an instant, only "
                "resources changed since. Answers 202 with `Content-Location`, the status URL to poll.")


def _kickoff(request: Request, ctx: ServiceContext, prefer: str | None, types: str | None, since: datetime | None,
             output_format: str | None) -> Response:
    try:
        if "respond-async" not in (prefer or ""):
            raise InvalidInput("bulk export is asynchronous: send 'Prefer: respond-async'", field="Prefer")
        if output_format is not None and output_format not in _FORMATS:
            raise InvalidInput("_outputFormat must be application/fhir+ndjson", field="_outputFormat")
        if since is not None and since.tzinfo is None:
            raise InvalidInput("_since must be an instant with a time zone", field="_since")
        chosen = export.parse_types(types)
    except InvalidInput as exc:
        ctx.trail.record(ctx.session, "bulk.export", audit.INVALID, resource_type=export.RESOURCE, detail={"field": exc.field})
        raise
    job_id = export.kickoff(ctx, chosen, since, str(request.url))
    base = str(request.base_url).rstrip("/")
    return Response(status_code=202, headers={"Content-Location": f"{base}/fhir/R4/bulk-export/{job_id}"})


Gate = Annotated[ServiceContext, Depends(require(P.BULK_EXPORT))]
Prefer = Annotated[str | None, Header(alias="Prefer", max_length=200)]
TypeQ = Annotated[str | None, Query(alias="_type", max_length=200)]
SinceQ = Annotated[datetime | None, Query(alias="_since")]
FormatQ = Annotated[str | None, Query(alias="_outputFormat", max_length=60)]


@router.get("/$export", status_code=202, summary="Bulk export, system level (kick-off)", description=_KICKOFF_DOC)
def kickoff_system(request: Request, ctx: Gate, prefer: Prefer = None, types: TypeQ = None, since: SinceQ = None,
                   output_format: FormatQ = None):
    return _kickoff(request, ctx, prefer, types, since, output_format)


@router.get("/Patient/$export", status_code=202, summary="Bulk export, all patients (kick-off)", description=_KICKOFF_DOC)
def kickoff_patients(request: Request, ctx: Gate, prefer: Prefer = None, types: TypeQ = None, since: SinceQ = None,
                     output_format: FormatQ = None):
    return _kickoff(request, ctx, prefer, types, since, output_format)


@router.get("/bulk-export/{job_id}", summary="Bulk export status: 202 with X-Progress, then 200 with the manifest")
def poll(job_id: uuid.UUID, request: Request,
         ctx: Annotated[ServiceContext, Depends(require(P.BULK_EXPORT, action="bulk.export.status"))]):
    st = export.status(ctx, job_id)
    if not st.done:
        return Response(status_code=202, headers={"X-Progress": st.progress, "Retry-After": "1"})
    base = str(request.base_url).rstrip("/")
    body = export.manifest(st.job, base, ctx.runtime.settings.bulk_export.file_rows)
    return JSONResponse(body, headers={"Expires": st.job.expires_at.strftime("%a, %d %b %Y %H:%M:%S GMT")})


@router.delete("/bulk-export/{job_id}", status_code=202, summary="Cancel a bulk export and delete its snapshot")
def cancel(job_id: uuid.UUID, ctx: Annotated[ServiceContext, Depends(require(P.BULK_EXPORT, action="bulk.export.cancel"))]):
    export.cancel(ctx, job_id)
    return Response(status_code=202)


@router.get("/bulk-export/{job_id}/{resource_type}/{n}.ndjson", response_class=Response,
            responses={200: {"content": {NDJSON: {}}}}, summary="Download one file of a completed bulk export")
def download(job_id: uuid.UUID, resource_type: str, n: int,
             ctx: Annotated[ServiceContext, Depends(require(P.BULK_EXPORT, action="bulk.export.download"))]):
    count, body = export.download(ctx, job_id, resource_type, n)
    return Response(body, media_type=NDJSON, headers={"X-Export-Count": str(count)})
