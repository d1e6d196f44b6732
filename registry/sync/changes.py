"""The changes feed of one facility (issue 5): what a device needs to work offline.

What: the patients whose home facility it is, and all their doses (whoever recorded them), as
entries ordered by change position (changed_at, kind, id). A patient entry carries the patient's
current doses, so a patient who moves in arrives with its history; a dose entry is a dose that
was recorded, corrected (the replacement and the superseded row) or voided.

Merges (issue 13): a merge moves both patients' change positions and the moved doses', so the
feed carries the merged record with `replaced_by` naming its survivor, the survivor with every
dose it now holds, and each moved dose under its new owner; an unmerge does the same in reverse.

Who: the facility must be in the caller's capture scope (registry/scoping): a clinic sees only
its own facility, an official the facilities of its jurisdiction. Anything else, or an unknown
facility, is 404; out of scope is audited `denied`. Each page writes one `sync.changes` event
with the page's patients as subjects.

Late commits and clock skew: positions are stamped when a row is written, but the transaction
commits a little later, and hosts' clocks differ. A page that ends the download (`has_more`
false) therefore returns a cursor no later than `now - settings.sync.overlap_seconds`: the next download
re-reads that window, so a change whose transaction commits within the window of its stamp is
never behind the cursor. Clients deduplicate by (type, id, version). Page cursors (`has_more`
true) are for continuing the same download.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

from registry import scoping
from registry.context import ServiceContext
from registry.errors import InvalidInput, NotFound
from registry.facilities import repository as facilities
from registry.immunizations.service import to_view as dose_view
from registry.patients import codec
from registry.sync import repository as repo
from registry.sync.schemas import Change, ChangesPage
from security.audit import trail as audit

ACTION = "sync.changes"
NOT_FOUND = "facility not found"


def encode(pos: repo.Position) -> str:
    raw = json.dumps(["c1", pos[0].isoformat(), pos[1], str(pos[2])]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> repo.Position:
    try:
        tag, ts, kind, rid = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        when = datetime.fromisoformat(ts)
        if tag != "c1" or kind not in (-1, repo.PATIENT, repo.DOSE) or when.tzinfo is None:
            raise ValueError
        return when.astimezone(UTC), kind, uuid.UUID(rid)
    except Exception:
        raise InvalidInput("the cursor is not valid; start again without one", field="since") from None


def changes(ctx: ServiceContext, facility_code: str, since: str | None, limit: int) -> ChangesPage:
    fac = facilities.get(ctx.session, facility_code)
    if fac is None:
        ctx.trail.record(ctx.session, ACTION, audit.NOT_FOUND, resource_type="Location", detail={"facility": None})
        raise NotFound(NOT_FOUND)
    if not scoping.in_capture(ctx.principal, province=fac.province, district=fac.district, facility=fac.code):
        ctx.trail.record(ctx.session, ACTION, audit.DENIED, resource_type="Location", outside_capture_scope=True,
                         detail={"facility": fac.code})
        raise NotFound(NOT_FOUND)
    try:
        cursor = decode(since) if since else None
    except InvalidInput:
        ctx.trail.record(ctx.session, ACTION, audit.INVALID, resource_type="Location", detail={"field": "since"})
        raise
    horizon = (datetime.now(UTC) - timedelta(seconds=ctx.runtime.settings.sync.overlap_seconds), -1, uuid.UUID(int=0))
    rows = [((r.updated_at, repo.PATIENT, r.id), r) for r in repo.patients_after(ctx.session, fac.code, cursor, limit + 1)]
    rows += [((r.changed_at, repo.DOSE, r.id), r) for r in repo.doses_after(ctx.session, fac.code, cursor, limit + 1)]
    rows.sort(key=lambda x: x[0])
    has_more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1][0] if rows else cursor
    next_pos = last if has_more else min(p for p in (last, horizon) if p is not None)
    items = _entries(ctx, rows)
    subjects = [i.id if i.type == "patient" else i.immunization.patient_id for i in items]
    ctx.trail.record(ctx.session, ACTION, audit.SUCCESS, resource_type="Location", subjects=subjects,
                     detail={"facility": fac.code, "count": len(items)})
    return ChangesPage(items=items, next_cursor=encode(next_pos), has_more=has_more)


def _entries(ctx: ServiceContext, rows) -> list[Change]:
    cipher = ctx.runtime.cipher
    patient_ids = [r.id for pos, r in rows if pos[1] == repo.PATIENT]
    their_doses = repo.doses_of(ctx.session, patient_ids)
    out = []
    for (changed_at, kind, rid), r in rows:
        if kind == repo.PATIENT:
            out.append(Change(type="patient", id=rid, version=r.version, changed_at=changed_at, patient=codec.to_view(cipher, r),
                              immunizations=[dose_view(ctx, d) for d in their_doses.get(rid, [])],
                              replaced_by=r.merged_into))
        else:
            out.append(Change(type="immunization", id=rid, version=r.version, changed_at=changed_at,
                              immunization=dose_view(ctx, r)))
    return out
