"""Coverage dashboard for health officials: coverage, dropout and zero-dose of a jurisdiction and
birth cohort, drill-down to the units below, the SVG chart rendered on the server, CSV and DHIS2
(dataValueSets JSON) downloads.

The same service as `GET /api/v1/reports/coverage` (`report.coverage`, one event per page; the
chart is drawn from that same report by `registry.reports.render`, so no second query) and
`GET /api/v1/reports/coverage/export?format=csv|dhis2` (`report.export`; without a DHIS2 mapping
for the province or country the download answers 404 with the API's message). Out of scope answers 404 as the API does.
Jurisdiction and cohort travel in POST bodies like every search value.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Form
from fastapi.responses import JSONResponse, Response
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool

from api.console.gate import ConsoleCall, Gate
from api.console.templating import render
from api.routing import GatedRoute
from registry.reports import catalogue as cat
from registry.reports import render as charts
from registry.reports import service as reports
from security.access.permissions import Permission as P

router = APIRouter(route_class=GatedRoute, prefix="/console/coverage", include_in_schema=False)

Cohort = Annotated[str, Form(pattern=r"^\d{4}(-\d{2})?$")]
Code = Annotated[str | None, Form(max_length=32)]
Denominator = Annotated[Literal["registered", "target"], Form()]
KEY_ITEMS = ("BCG-1", "PENTA-1", "PENTA-3", "MR-1")


def _form(call: ConsoleCall, **context):
    return render(call.request, "coverage.html", me=call.principal, csrf=call.csrf, items=cat.ITEMS, key_items=KEY_ITEMS,
                  **context)


@router.get("")
def coverage_form(call: Annotated[ConsoleCall, Gate(P.REPORT_READ, audited=False)]):
    return _form(call, cohort=str(date.today().year), jurisdiction=call.principal.scope.code, item="PENTA-3",
                 denominator="registered")


@router.post("")
async def coverage(call: Annotated[ConsoleCall, Gate(P.REPORT_READ, action="report.coverage")], cohort: Cohort,
                   jurisdiction: Code = None, denominator: Denominator = "registered",
                   item: Annotated[str, Form(max_length=16)] = "PENTA-3"):
    ctx = call.context()
    item = item if item in cat.ITEMS else "PENTA-3"
    report = await run_in_threadpool(lambda: reports.coverage_report(ctx, jurisdiction=jurisdiction or None, cohort=cohort,
                                                                     denominator=denominator))
    chart = Markup(charts.chart_svg(report, item, "valid")) if report["rows"] else None  # escaped by the renderer
    return _form(call, report=report, chart=chart, cohort=cohort, jurisdiction=report["jurisdiction"]["code"], item=item,
                 denominator=denominator, dropouts=[f"{a}>{b}" for a, b in cat.DROPOUTS])


@router.post("/export")
async def export(call: Annotated[ConsoleCall, Gate(P.REPORT_READ, action="report.export")], cohort: Cohort,
                 jurisdiction: Code = None, denominator: Denominator = "registered",
                 format: Annotated[Literal["csv", "dhis2"], Form()] = "csv"):
    ctx = call.context()
    body, facts = await run_in_threadpool(lambda: reports.export(ctx, fmt=format, jurisdiction=jurisdiction or None,
                                                                 cohort=cohort, denominator=denominator))
    if format == "dhis2":
        return JSONResponse(body, headers={"X-Export-Skipped": str(facts["skipped"]),
                                           "Content-Disposition": f'attachment; filename="coverage-{cohort}-dhis2.json"'})
    return Response(body, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="coverage-{cohort}.csv"'})
