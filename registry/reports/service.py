"""Report use cases. Each request writes exactly one audit event, with the jurisdiction, cohort
and format in its detail and no patient subject (a report is an aggregate).

Invariants:
- A report answers only for a jurisdiction in the caller's capture scope; any other code
  answers 404 (audited `denied`) so another province's tree is not probed.
- Before answering, queued patient changes (up to `settings.reports.refresh_max`) are folded into the
  aggregates in the same transaction; `aggregates_pending` says how many were left. They are
  folded in as of today (the schedule in force today), whatever `as_of` the report asks for: a
  report's `as_of` only decides zero-dose eligibility and never changes the maintained aggregates.
- Nothing is decrypted: only `report_*` tables and the jurisdiction tree are read.
"""

from __future__ import annotations

from datetime import date

from registry.clock import local_today
from registry.context import ServiceContext
from registry.errors import InvalidInput, NotFound
from registry.reports import aggregate, coverage, dhis2, population, render
from registry.reports import catalogue as cat
from registry.scoping import jurisdiction_in_capture
from security.audit import trail as audit

RESOURCE = "Report"
FORMATS = ("json", "csv", "dhis2")


def _refuse(ctx: ServiceContext, action: str, outcome: str, exc: Exception, detail: dict) -> None:
    ctx.trail.record(ctx.session, action, outcome, resource_type=RESOURCE, detail=detail)
    raise exc


def _node(ctx: ServiceContext, action: str, tree: coverage.Tree, code: str | None, detail: dict):
    code = code or (ctx.principal.scope.code if ctx.principal.scope.level != "facility" else None)
    node = tree.nodes.get(code) if code else None
    if node is None or not jurisdiction_in_capture(ctx.principal, level=node.level, province=node.province, district=node.district):
        outcome = audit.NOT_FOUND if node is None else audit.DENIED
        _refuse(ctx, action, outcome, NotFound("jurisdiction not found"), {**detail, "reason": "outside scope or unknown"})
    return node


def coverage_report(ctx: ServiceContext, *, jurisdiction: str | None, cohort: str, denominator: str = "registered",
                    as_of: date | None = None, action: str = "report.coverage", extra: dict | None = None) -> dict:
    detail = {"jurisdiction": (jurisdiction or "")[:32], "cohort": (cohort or "")[:7], "denominator": denominator[:16],
              **(extra or {})}
    as_of = as_of or local_today()
    tree = coverage.Tree.load(ctx.session)
    node = _node(ctx, action, tree, jurisdiction, detail)
    detail["jurisdiction"] = node.code
    try:
        parsed = coverage.parse_cohort(cohort)
        if denominator not in coverage.DENOMINATORS:
            raise InvalidInput(f"denominator must be one of: {', '.join(coverage.DENOMINATORS)}", field="denominator")
    except InvalidInput as exc:
        _refuse(ctx, action, audit.INVALID, exc, {**detail, "field": exc.field})
    settings = ctx.runtime.settings
    if settings.reports.refresh_max:
        aggregate.refresh(ctx.session, local_today(), settings.reports.refresh_max)  # never the report's as_of
    report = coverage.build(ctx.session, node, tree, parsed, as_of, denominator, settings.reports.min_cell)
    report["aggregates_pending"] = aggregate.pending(ctx.session)
    ctx.trail.record(ctx.session, action, audit.SUCCESS, resource_type=RESOURCE, resource_id=node.code, detail=detail)
    return report


def export(ctx: ServiceContext, *, fmt: str, jurisdiction: str | None, cohort: str, denominator: str = "registered",
           as_of: date | None = None) -> tuple[str | dict, dict]:
    """(body, facts): CSV text or the DHIS2 payload; facts carry the skipped count for DHIS2."""
    report = coverage_report(ctx, jurisdiction=jurisdiction, cohort=cohort, denominator=denominator, as_of=as_of,
                             action="report.export", extra={"format": fmt})
    if fmt == "csv":
        return render.to_csv(report), {}
    mapping = dhis2.mapping_for(ctx.session, coverage.Tree.load(ctx.session), report["jurisdiction"]["code"])
    if mapping is None:
        raise NotFound("no DHIS2 mapping is loaded for this province or the country; load one with `nhr reports dhis2-mapping`")
    payload, skipped = dhis2.data_value_set(report, mapping)
    return payload, {"skipped": skipped}


def chart(ctx: ServiceContext, *, jurisdiction: str | None, cohort: str, item: str, measure: str,
          denominator: str = "registered") -> str:
    if item not in cat.ITEMS or measure not in coverage.MEASURES:
        field = "item" if item not in cat.ITEMS else "measure"
        _refuse(ctx, "report.chart", audit.INVALID, InvalidInput(f"unknown {field}", field=field), {"field": field})
    report = coverage_report(ctx, jurisdiction=jurisdiction, cohort=cohort, denominator=denominator,
                             action="report.chart", extra={"item": item, "measure": measure})
    return render.chart_svg(report, item, measure)


def load_population(ctx: ServiceContext, text: str) -> int:
    action = "report.population_load"
    tree = coverage.Tree.load(ctx.session)
    try:
        rows = population.parse(text, tree.nodes)
    except InvalidInput as exc:
        _refuse(ctx, action, audit.INVALID, exc, {"field": exc.field})
    outside = [r["jurisdiction_code"] for r in rows if not _in_scope(ctx, tree, r["jurisdiction_code"])]
    if outside:
        _refuse(ctx, action, audit.DENIED, NotFound(f"{len(outside)} figure(s) are for jurisdictions outside your scope"),
                {"reason": "outside scope", "rows": len(rows)})
    count = population.store(ctx.session, rows, ctx.principal.username)
    ctx.trail.record(ctx.session, action, audit.SUCCESS, resource_type=RESOURCE, detail={"rows": count})
    return count


def load_mapping(ctx: ServiceContext, document: object) -> dict:
    action = "report.dhis2_mapping"
    tree = coverage.Tree.load(ctx.session)
    try:
        doc = dhis2.validate(document, tree)
    except InvalidInput as exc:
        _refuse(ctx, action, audit.INVALID, exc, {"field": exc.field})
    if not _in_scope(ctx, tree, doc["jurisdiction"]):
        _refuse(ctx, action, audit.DENIED, NotFound("jurisdiction not found"), {"reason": "outside scope"})
    dhis2.store(ctx.session, doc, ctx.principal.username)
    ctx.trail.record(ctx.session, action, audit.SUCCESS, resource_type=RESOURCE, resource_id=doc["jurisdiction"],
                     detail={"data_elements": len(doc["data_elements"]), "org_units": len(doc["org_units"])})
    return {"jurisdiction": doc["jurisdiction"], "data_elements": len(doc["data_elements"]), "org_units": len(doc["org_units"])}


def _in_scope(ctx: ServiceContext, tree: coverage.Tree, code: str) -> bool:
    node = tree.nodes[code]
    return jurisdiction_in_capture(ctx.principal, level=node.level, province=node.province, district=node.district)
