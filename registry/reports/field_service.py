"""Use cases of the field-work reports (issue 12): refusals and missed opportunities per birth
cohort, and data quality for a period. As every report (registry/reports/service.py): one audit
event per request with the jurisdiction and parameters in its detail and no patient subject; a
jurisdiction outside the caller's capture scope (or unknown) answers 404, audited; small cells
are suppressed; nothing is decrypted."""

from __future__ import annotations

from datetime import date

from registry.context import ServiceContext
from registry.errors import InvalidInput, NotFound
from registry.reports import coverage, dhis2, dhis2_quality, quality, refusals
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


def refusals_report(ctx: ServiceContext, *, jurisdiction: str | None, cohort: str) -> dict:
    action = "report.refusals"
    detail = {"jurisdiction": (jurisdiction or "")[:32], "cohort": (cohort or "")[:7]}
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
                 action: str = "report.data_quality", extra: dict | None = None, check=None) -> dict:
    """`check(start, end)` (raising InvalidInput) adds a rule of the caller's, e.g. a DHIS2 period."""
    detail = {"jurisdiction": (jurisdiction or "")[:32], "from": start.isoformat() if start else None,
              "to": end.isoformat() if end else None, **(extra or {})}
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
        if check is not None:
            check(start, end)
    except InvalidInput as exc:
        _refuse(ctx, action, audit.INVALID, exc, {**detail, "field": exc.field})
    report = quality.build(ctx.session, node, tree, start, end, ctx.runtime.settings.reports.min_cell)
    ctx.trail.record(ctx.session, action, audit.SUCCESS, resource_type=RESOURCE, resource_id=node.code, detail=detail)
    return report


def data_quality_dhis2(ctx: ServiceContext, *, jurisdiction: str | None, start: date | None, end: date | None) -> tuple[dict, int]:
    """(dataValueSets payload, skipped). Needs the province's (or country's) data-quality mapping
    and its coverage mapping (for the organisation units); the period a calendar month or year."""
    report = data_quality(ctx, jurisdiction=jurisdiction, start=start, end=end, action="report.export",
                          extra={"format": "dhis2", "report": "data-quality"}, check=dhis2_quality.period)
    tree = coverage.Tree.load(ctx.session)
    code = report["jurisdiction"]["code"]
    elements, units = dhis2_quality.mapping_for(ctx.session, tree, code), dhis2.mapping_for(ctx.session, tree, code)
    if elements is None or units is None:
        raise NotFound("no DHIS2 mapping (data-quality elements and organisation units) is loaded for this province or "
                       "the country; load them with `nhr reports dhis2-quality-mapping` and `nhr reports dhis2-mapping`")
    return dhis2_quality.data_value_set(report, elements["data_elements"], units["org_units"])


def load_quality_mapping(ctx: ServiceContext, document: object) -> dict:
    action = "report.dhis2_mapping"
    tree = coverage.Tree.load(ctx.session)
    try:
        doc = dhis2_quality.validate(document, tree)
    except InvalidInput as exc:
        _refuse(ctx, action, audit.INVALID, exc, {"field": exc.field, "report": "data-quality"})
    node = tree.nodes[doc["jurisdiction"]]
    if not jurisdiction_in_capture(ctx.principal, level=node.level, province=node.province, district=node.district):
        _refuse(ctx, action, audit.DENIED, NotFound("jurisdiction not found"), {"reason": "outside scope", "report": "data-quality"})
    dhis2_quality.store(ctx.session, doc, ctx.principal.username)
    ctx.trail.record(ctx.session, action, audit.SUCCESS, resource_type=RESOURCE, resource_id=doc["jurisdiction"],
                     detail={"data_elements": len(doc["data_elements"]), "report": "data-quality"})
    return {"jurisdiction": doc["jurisdiction"], "data_elements": len(doc["data_elements"])}
