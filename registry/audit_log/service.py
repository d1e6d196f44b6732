"""The auditor's view of the log. Reading the log is itself an audited access (`audit.query`)."""

from __future__ import annotations

from datetime import UTC

from registry.audit_log import repository as repo
from registry.audit_log.schemas import AuditEventPage, AuditEventView
from registry.context import ServiceContext
from registry.errors import InvalidInput
from security.audit import trail as audit


def search(ctx: ServiceContext, f: repo.EventFilter, cursor: str | None, limit: int) -> AuditEventPage:
    try:
        rows, nxt = repo.query(ctx.session, ctx.principal, f, cursor=cursor, limit=limit)
    except InvalidInput:
        ctx.trail.record(ctx.session, "audit.query", audit.INVALID, resource_type="AuditEvent", detail={"field": "cursor"})
        raise
    items = []
    for r in rows:
        d = dict(r._mapping)
        if d["occurred_at"].tzinfo is None:
            d["occurred_at"] = d["occurred_at"].replace(tzinfo=UTC)
        d.pop("actor_province", None)
        d.pop("actor_district", None)
        items.append(AuditEventView(**d))
    ctx.trail.record(ctx.session, "audit.query", audit.SUCCESS, resource_type="AuditEvent",
                     patient=None, detail={"count": len(items), "filters": sorted(k for k, v in vars(f).items() if v is not None)})
    return AuditEventPage(items=items, next_cursor=nxt)
