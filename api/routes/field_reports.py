"""Field-work reports (issue 12): refusals and missed opportunities per birth cohort, and data
quality for a period. Permission report:read; each request is one audited event; cells are
suppressed; nothing is decrypted (registry/reports/refusals.py, quality.py)."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from api.deps import require
from api.routes.reports import Cohort, Jurisdiction
from registry.context import ServiceContext
from registry.reports import field_service
from security.access.permissions import Permission as P

router = APIRouter(prefix="/api/v1/reports", tags=["reports"])


@router.get("/refusals", summary="Refusals and missed opportunities per jurisdiction, birth cohort and reason group")
def refusals(ctx: Annotated[ServiceContext, Depends(require(P.REPORT_READ, action="report.refusals"))], cohort: Cohort,
             jurisdiction: Jurisdiction = None) -> dict:
    return field_service.refusals_report(ctx, jurisdiction=jurisdiction, cohort=cohort)


@router.get("/data-quality", summary="Data quality for a period: completeness, timeliness, consistency, unknown codes")
def data_quality(ctx: Annotated[ServiceContext, Depends(require(P.REPORT_READ, action="report.data_quality"))],
                 start: Annotated[date | None, Query(alias="from", description="first day of the period (local date)")] = None,
                 end: Annotated[date | None, Query(alias="to", description="last day of the period (at most 366 days)")] = None,
                 jurisdiction: Jurisdiction = None) -> dict:
    return field_service.data_quality(ctx, jurisdiction=jurisdiction, start=start, end=end)
