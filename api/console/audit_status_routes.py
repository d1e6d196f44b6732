"""The auditor's anomaly flags and the audit log's verification status, through the same gate and
the same services as `GET /api/v1/audit/anomalies` (`audit.anomalies`: each flag with its plain
explanation and the numbers behind it) and `GET /api/v1/audit/verification` (`audit.verification`:
the latest checkpoint, its size and time, and whether the log up to it verifies, computed now)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated

from fastapi import APIRouter, Form
from starlette.concurrency import run_in_threadpool

from api.console.gate import ConsoleCall, Gate
from api.console.templating import render
from api.routing import GatedRoute
from registry.audit_log import anomalies, log_status
from security.access.permissions import Permission as P

router = APIRouter(route_class=GatedRoute, prefix="/console/audit", include_in_schema=False)

Day = Annotated[date | None, Form()]


async def _anomalies(call: ConsoleCall, since: date | None, until: date | None):
    ctx = call.context()
    start = datetime.combine(since, time.min, UTC) if since else None
    end = datetime.combine(until, time.min, UTC) + timedelta(days=1) if until else None
    report = await run_in_threadpool(anomalies.report, ctx, start, end)
    return render(call.request, "anomalies.html", me=call.principal, csrf=call.csrf, report=report,
                  f={"since": since, "until": until})


@router.get("/anomalies")
async def anomaly_flags(call: Annotated[ConsoleCall, Gate(P.AUDIT_READ, action="audit.anomalies")]):
    """The last 24 hours, as the API's default."""
    return await _anomalies(call, None, None)


@router.post("/anomalies")
async def anomaly_flags_between(call: Annotated[ConsoleCall, Gate(P.AUDIT_READ, action="audit.anomalies")],
                                since: Day = None, until: Day = None):
    return await _anomalies(call, since, until)


@router.get("/log")
async def log_verification(call: Annotated[ConsoleCall, Gate(P.AUDIT_READ, action=log_status.ACTION)]):
    status = await run_in_threadpool(log_status.status, call.context())
    return render(call.request, "audit_log.html", me=call.principal, csrf=call.csrf, status=status)
