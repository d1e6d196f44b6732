"""Coverage reports for officials (issue 4): JSON, CSV, DHIS2 dataValueSets, an SVG chart, and
loading the target populations and DHIS2 mappings behind them. Every request is one audited
event; reports are aggregates with small cells suppressed, and nothing is decrypted."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import JSONResponse, Response

from api.deps import require
from api.routing import GatedRoute
from registry.context import ServiceContext
from registry.nodes import service as nodes
from registry.reports import catalogue as cat
from registry.reports import service
from security.access.permissions import Permission as P

router = APIRouter(route_class=GatedRoute, prefix="/api/v1/reports", tags=["reports"])

Jurisdiction = Annotated[str | None, Query(max_length=32, description="jurisdiction code at any level (default: your scope)",
                                           openapi_examples={"district": {"value": "PK-PB-LAH"}})]
Cohort = Annotated[str, Query(pattern=r"^\d{4}(-\d{2})?$", description="birth cohort: a year (2025) or a month (2025-03)",
                              openapi_examples={"year": {"value": "2025"}})]
Denominator = Annotated[Literal["registered", "target"], Query(description="registered children, or the loaded target population")]
Item = Annotated[str, Query(max_length=16, description=f"antigen-dose, one of {', '.join(cat.ITEMS)}")]
_READ = Depends(require(P.REPORT_READ, action="report.read"))
_CONFIGURE = Depends(require(P.REPORT_CONFIGURE, action="report.configure"))
POPULATION_EXAMPLE = "jurisdiction_code,year,population\nPK-PB-LAH,2025,312000\nPK-PB-RWP,2025,148500\n"


@router.get("/coverage", summary="Coverage, dropout and zero-dose for a jurisdiction and birth cohort")
def coverage(ctx: Annotated[ServiceContext, _READ], cohort: Cohort, jurisdiction: Jurisdiction = None,
             denominator: Denominator = "registered",
             as_of: Annotated[date | None, Query(description="date for zero-dose eligibility (default today)")] = None) -> dict:
    return service.coverage_report(ctx, jurisdiction=jurisdiction, cohort=cohort, denominator=denominator, as_of=as_of)


@router.get("/national", summary="National coverage from every provincial node (provincial nodes only)",
            description="This node's province and each peer node's, each already suppressed by its province. A node "
                        "that does not answer is `stale` with its last good report and the time of it (`unavailable` "
                        "if it never answered): the report never fails for a province's outage. National scope only.")
async def national(ctx: Annotated[ServiceContext, _READ], cohort: Cohort, denominator: Denominator = "registered",
                   as_of: Annotated[date | None, Query(description="date for zero-dose eligibility (default today)")] = None) -> dict:
    return await nodes.national_coverage(ctx, cohort=cohort, denominator=denominator, as_of=as_of)


@router.get("/coverage/export", summary="The coverage report as CSV or DHIS2 dataValueSets JSON",
            response_class=Response,
            responses={200: {"content": {"text/csv": {"schema": {"type": "string"}},
                                         "application/json": {"example": {"dataValues": [
                                             {"dataElement": "fClA2Erf6IO", "period": "2025", "orgUnit": "O6uvpzGd5pu",
                                              "categoryOptionCombo": "HllvX50cXC0", "value": "1240"}]}}}}})
def export(ctx: Annotated[ServiceContext, _READ], cohort: Cohort, format: Literal["csv", "dhis2"] = "csv",
           jurisdiction: Jurisdiction = None, denominator: Denominator = "registered", as_of: date | None = None):
    body, facts = service.export(ctx, fmt=format, jurisdiction=jurisdiction, cohort=cohort, denominator=denominator, as_of=as_of)
    if format == "csv":
        return Response(body, media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="coverage-{cohort}.csv"'})
    return JSONResponse(body, headers={"X-Export-Skipped": str(facts["skipped"])})


@router.get("/coverage/chart.svg", summary="Coverage of one antigen-dose by sub-jurisdiction, as an SVG bar chart",
            response_class=Response, responses={200: {"content": {"image/svg+xml": {"schema": {"type": "string"}}}}})
def chart(ctx: Annotated[ServiceContext, _READ], cohort: Cohort, jurisdiction: Jurisdiction = None, item: Item = "PENTA-3",
          measure: Literal["any", "valid"] = "valid", denominator: Denominator = "registered"):
    svg = service.chart(ctx, jurisdiction=jurisdiction, cohort=cohort, item=item, measure=measure, denominator=denominator)
    return Response(svg, media_type="image/svg+xml")


@router.post("/target-populations", summary="Load target population figures (CSV: jurisdiction_code,year,population)")
def load_population(ctx: Annotated[ServiceContext, _CONFIGURE],
                    file: Annotated[str, Body(media_type="text/csv", min_length=1, openapi_examples={
                        "figures": {"value": POPULATION_EXAMPLE}})]) -> dict:
    return {"loaded": service.load_population(ctx, file)}


@router.put("/dhis2-mapping", summary="Load a province's (or the country's) DHIS2 mapping")
def load_mapping(ctx: Annotated[ServiceContext, _CONFIGURE], document: Annotated[dict, Body()]) -> dict:
    return service.load_mapping(ctx, document)
