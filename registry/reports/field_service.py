"""Use cases of the field-work reports (issue 12): refusals and missed opportunities per birth
cohort, and data quality for a period. As every report (registry/reports/service.py): one audit
event per request with the jurisdiction and parameters in its detail and no patient subject; a
jurisdiction outside the caller's capture scope (or unknown) answers 404, audited; small cells
are suppressed; nothing is decrypted."""

from __future__ import annotations

from datetime import date

from registry.context import ServiceContext
from registry.errors import InvalidInput, NotFound
from registry.reports import coverage, quality, refusals
from registry.scoping import jurisdiction_in_capture
from security.audit import trail as audit

RESOURCE = "Report"
MAX_PERIOD_DAYS = 366


def _refuse(ctx: ServiceContext, action: str, outcome: str, exc: Exception, detail: dict):
    ctx.trail.record(ctx.session, action, outcome, resource_type=RESOURCE, detail=detail)
    raise exc


def _node(ctx: ServiceContext, action: str, tree: coverage.Tree, code: str | None, detail: dict):
    code = code or (ctx.principal.scope.code if ctx.principal.scope.level != "facility" else None)
    node = tree.nodes.get(code) if code else None
    if node is None or not jurisdiction_in_capture(ctx.principal, level=node.level, province=node.province, district=node.district):
        outcome = audit.NOT_FOUND if node is None else audit.DENIED
        _refuse(ctx, action, outcome, NotFound("jurisdiction not found"), {**detail, "reason": "outside scope or unknown"})
    detail["jurisdiction"] = node.code
    return node


def refusals_report(ctx: ServiceContext, *, jurisdiction: str | None, cohort: str, via: str | None = None) -> dict:
    action = "report.refusals"
    detail = {"jurisdiction": (jurisdiction or "")[:32], "cohort": (cohort or "")[:7], **({"via": via} if via else {})}
    tree = coverage.Tree.load(ctx.session)
    node = _node(ctx, action, tree, jurisdiction, detail)
    try:
        parsed = coverage.parse_cohort(cohort)
    except InvalidInput as exc:
        _refuse(ctx, action, audit.INVALID, exc, {**detail, "field": exc.field})
    report = refusals.build(ctx.session, node, tree, parsed, ctx.runtime.settings.reports.min_cell)
    ctx.trail.record(ctx.session, action, audit.SUCCESS, resource_type=RESOURCE, resource_id=node.code, detail=detail)
    return report


def data_quality(ctx: ServiceContext, *, jurisdiction: str | None, start: date | None, end: date | None,
                 via: str | None = None) -> dict:
    action = "report.data_quality"
    detail = {"jurisdiction": (jurisdiction or "")[:32], "from": start.isoformat() if start else None,
              "to": end.isoformat() if end else None, **({"via": via} if via else {})}
    tree = coverage.Tree.load(ctx.session)
    node = _node(ctx, action, tree, jurisdiction, detail)
    try:
        if start is None:
            raise InvalidInput("the first day of the period is required (YYYY-MM-DD)", field="from")
        if end is None:
            raise InvalidInput("the last day of the period is required (YYYY-MM-DD)", field="to")
        if end < start:
            raise InvalidInput("must not be before `from`", field="to")
        if (end - start).days >= MAX_PERIOD_DAYS:
            raise InvalidInput(f"the period is at most {MAX_PERIOD_DAYS} days", field="to")
    except InvalidInput as exc:
        _refuse(ctx, action, audit.INVALID, exc, {**detail, "field": exc.field})
    report = quality.build(ctx.session, node, tree, start, end, ctx.runtime.settings.reports.min_cell)
    ctx.trail.record(ctx.session, action, audit.SUCCESS, resource_type=RESOURCE, resource_id=node.code, detail=detail)
    return report
