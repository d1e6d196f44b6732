"""What a data steward sees and chooses before an unmerge (issue 13 item 5): the two records, the
doses that go back to the restored record (those the merge moved), and the doses recorded on the
survivor since the merge, which stay with the survivor unless the steward ticks them to move
(`UnmergeRequest.move_dose_ids`, the same rule `merge._restore` enforces).

Scope as for the unmerge itself: the merged (replaced) record must be in the steward's capture
scope, else 404 (audited `denied`). The survivor is shown in full with its later doses only when it
is in capture scope too; a survivor in another province (a record folded into its twin there)
shows identity-confirmation fields only and no doses, as the pair view does, and nothing can be
ticked. Every record viewed writes its own `linkage.view` event, as the pair view does.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from pydantic import BaseModel

from registry.context import ServiceContext
from registry.errors import NotFound
from registry.immunizations.schemas import DoseView
from registry.immunizations.service import to_view as dose_view
from registry.linkage import steward_repository as repo
from registry.linkage.merge import NOT_FOUND, LinkageConflict, in_capture, ref, refuse, view
from registry.linkage.steward_schemas import MergeView
from registry.patients import codec
from registry.patients.schemas import PatientMatch
from security.audit import trail as audit

VIEW = "linkage.view"


class UnmergeChoice(BaseModel):
    merge: MergeView
    merged: PatientMatch
    survivor: PatientMatch
    returning: list[DoseView]  # moved by the merge: back to the restored record
    later: list[DoseView] | None = None  # recorded on the survivor since the merge: stay unless ticked (None: not shown)


def later_doses(doses: list, merged_at: datetime) -> list:
    """Doses recorded on the survivor itself after the merge (never moved by a merge): the ones a
    steward may move on unmerge."""
    return [d for d in doses if d.original_patient_id is None and _aware(d.recorded_at) >= _aware(merged_at)]


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def choice(ctx: ServiceContext, merged_id: uuid.UUID) -> UnmergeChoice:
    rows = repo.patients(ctx.session, [merged_id])
    if merged_id not in rows:
        raise refuse(ctx, VIEW, NotFound(NOT_FOUND), resource_id=merged_id)
    merged = rows[merged_id]
    if not in_capture(ctx, merged):
        ctx.trail.record(ctx.session, VIEW, audit.DENIED, resource_type="Patient", resource_id=merged_id,
                         patient=ref(merged), outside_capture_scope=True)
        raise NotFound(NOT_FOUND)
    m = repo.active_merge_of(ctx.session, merged_id)
    if m is None or merged.merged_into is None:
        raise refuse(ctx, VIEW, LinkageConflict("not_merged", "this record is not merged into another; there is nothing "
                                                              "to unmerge"), resource_id=merged_id, patient=ref(merged))
    survivor = repo.patients(ctx.session, [m.survivor_id])[m.survivor_id]
    survivor_full = in_capture(ctx, survivor)
    moved = {uuid.UUID(d) for d, _ in m.moved_doses}
    on_survivor = repo.doses_of(ctx.session, survivor.id)
    returning = [dose_view(ctx, d) for d in on_survivor if d.id in moved]
    later = [dose_view(ctx, d) for d in later_doses(on_survivor, m.merged_at)] if survivor_full else None
    cipher = ctx.runtime.cipher
    out = UnmergeChoice(merge=view(m._asdict()), merged=codec.to_match(cipher, merged, full=True),
                        survivor=codec.to_match(cipher, survivor, full=survivor_full), returning=returning, later=later)
    for row, full in ((merged, True), (survivor, survivor_full)):  # one event per record viewed
        ctx.trail.record(ctx.session, VIEW, audit.SUCCESS, resource_type="Patient", resource_id=row.id, patient=ref(row),
                         outside_capture_scope=not full,
                         detail={"merge_id": str(m.id), "fields": "full" if full else "identity", "for": "unmerge"})
    return out
