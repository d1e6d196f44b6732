"""Exports of the audit log for auditors: NDJSON, CSV and FHIR AuditEvent (NDJSON, as in FHIR
Bulk Data), with the same filters and jurisdiction scope as the search.

Invariants:
- One export is one audited request (`audit.export`): the event records the format, the *names*
  of the filters used, the number of rows and whether the hard maximum cut the export short;
  never a filter's value.
- An export is capped at `settings.audit.export_max_rows` (100,000 by default). The rows are read inside
  the request's transaction, so the count in the audit event is exactly what is sent; the
  serialisation is then streamed. A truncated export says so (see `ExportResult`).
- Rows are in log order (oldest first). CSV cells that a spreadsheet would run as a formula
  (starting with = + - @ or a tab/CR) are prefixed with a quote.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Iterator

from registry.audit_log import fhir_audit
from registry.audit_log import repository as repo
from registry.audit_log.schemas import AuditEventView
from registry.audit_log.service import as_view
from registry.context import ServiceContext
from security.audit import trail as audit

FORMATS = {"ndjson": "application/x-ndjson", "csv": "text/csv; charset=utf-8", "fhir": "application/fhir+ndjson"}
COLUMNS = list(AuditEventView.model_fields)
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class ExportResult:
    media_type: str
    count: int
    truncated: bool
    max_rows: int
    chunks: Iterator[str]


def export(ctx: ServiceContext, f: repo.EventFilter, fmt: str) -> ExportResult:
    max_rows = ctx.runtime.settings.audit.export_max_rows
    q = repo.filtered(ctx.principal, f).order_by(repo.EVENTS.c.occurred_at, repo.EVENTS.c.id).limit(max_rows + 1)
    rows = ctx.session.execute(q).all()
    truncated = len(rows) > max_rows
    rows = rows[:max_rows]
    ctx.trail.record(ctx.session, "audit.export", audit.SUCCESS, resource_type="AuditEvent",
                     detail={"format": fmt, "filters": repo.filter_names(f), "count": len(rows), "truncated": truncated})
    views = [as_view(r) for r in rows]
    source = f"NHR {ctx.runtime.settings.country} ({ctx.runtime.settings.tokens.issuer})"
    return ExportResult(FORMATS[fmt], len(views), truncated, max_rows, render(views, fmt, source))


def render(views: list[AuditEventView], fmt: str, source: str) -> Iterator[str]:
    """The serialised export of these events in one format (also makes the OpenAPI examples)."""
    return {"ndjson": _ndjson, "csv": _csv, "fhir": lambda v: _fhir(v, source)}[fmt](views)


def _ndjson(views: list[AuditEventView]) -> Iterator[str]:
    for v in views:
        yield v.model_dump_json() + "\n"


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return "'" + text if text.startswith(_FORMULA) else text


def _csv(views: list[AuditEventView]) -> Iterator[str]:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(COLUMNS)
    for i, v in enumerate(views, 1):
        d = v.model_dump()
        w.writerow([_cell(d[c]) for c in COLUMNS])
        if i % 500 == 0:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


def _fhir(views: list[AuditEventView], source: str) -> Iterator[str]:
    for v in views:
        yield json.dumps(fhir_audit.to_resource(v.model_dump(), source_name=source), separators=(",", ":")) + "\n"
