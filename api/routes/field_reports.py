"""Field-work reports (issue 12): refusals and missed opportunities per birth cohort, and data
quality for a period. Permission report:read; each request is one audited event; cells are
suppressed; nothing is decrypted (registry/reports/refusals.py, quality.py)."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import JSONResponse

from api.deps import require
from api.routes.reports import Cohort, Jurisdiction
from api.routing import GatedRoute
from registry.context import ServiceContext
from registry.reports import field_service
from security.access.permissions import Permission as P

router = APIRouter(route_class=GatedRoute, prefix="/api/v1/reports", tags=["reports"])


@router.get("/refusals", summary="Refusals and missed opportunities per jurisdiction, birth cohort and reason group")
def refusals(ctx: Annotated[ServiceContext, Depends(require(P.REPORT_READ, action="report.refusals"))], cohort: Cohort,
             jurisdiction: Jurisdiction = None) -> dict:
    return field_service.refusals_report(ctx, jurisdiction=jurisdiction, cohort=cohort)


Start = Annotated[date | None, Query(alias="from", description="first day of the period (local date)")]
End = Annotated[date | None, Query(alias="to", description="last day of the period (at most 366 days)")]


@router.get("/data-quality", summary="Data quality for a period: completeness, timeliness, consistency, unknown codes")
def data_quality(ctx: Annotated[ServiceContext, Depends(require(P.REPORT_READ, action="report.data_quality"))],
                 start: Start = None, end: End = None, jurisdiction: Jurisdiction = None) -> dict:
    return field_service.data_quality(ctx, jurisdiction=jurisdiction, start=start, end=end)


@router.get("/data-quality/export", summary="The data-quality report as DHIS2 dataValueSets (a calendar month or year)",
            responses={200: {"content": {"application/json": {"example": {"dataValues": [
                {"dataElement": "dqBformPct1", "period": "202603", "orgUnit": "O6uvpzGd5pu", "value": "72.4"}]}}}}})
def data_quality_export(ctx: Annotated[ServiceContext, Depends(require(P.REPORT_READ, action="report.export"))],
                        start: Start = None, end: End = None, jurisdiction: Jurisdiction = None) -> JSONResponse:
    payload, skipped = field_service.data_quality_dhis2(ctx, jurisdiction=jurisdiction, start=start, end=end)
    return JSONResponse(payload, headers={"X-Export-Skipped": str(skipped)})


@router.put("/dhis2-quality-mapping", summary="Load a province's (or the country's) DHIS2 data elements for data quality")
def load_quality_mapping(ctx: Annotated[ServiceContext, Depends(require(P.REPORT_CONFIGURE, action="report.configure"))],
                         document: Annotated[dict, Body()]) -> dict:
    return field_service.load_quality_mapping(ctx, document)
