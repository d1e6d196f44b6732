"""The auditor's view of the log. Reading the log is itself an audited access (`audit.query`)."""

from __future__ import annotations


from registry.audit_log import repository as repo
from registry.audit_log.schemas import AuditEventPage, AuditEventView
from registry.context import ServiceContext
from registry.errors import InvalidInput
from security.audit import trail as audit


def as_view(row) -> AuditEventView:
    """An audit row as auditors see it (identifiers of people and records, no clinical data)."""
    d = dict(row._mapping)
    d.pop("actor_province", None)
    d.pop("actor_district", None)
    return AuditEventView(**{k: v for k, v in d.items() if k in AuditEventView.model_fields})


def search(ctx: ServiceContext, f: repo.EventFilter, cursor: str | None, limit: int) -> AuditEventPage:
    try:
        rows, nxt = repo.query(ctx.session, ctx.principal, f, cursor=cursor, limit=limit)
    except InvalidInput:
        ctx.trail.record(ctx.session, "audit.query", audit.INVALID, resource_type="AuditEvent", detail={"field": "cursor"})
        raise
    items = [as_view(r) for r in rows]
    ctx.trail.record(ctx.session, "audit.query", audit.SUCCESS, resource_type="AuditEvent",
                     patient=None, detail={"count": len(items), "filters": repo.filter_names(f)})
    return AuditEventPage(items=items, next_cursor=nxt)
