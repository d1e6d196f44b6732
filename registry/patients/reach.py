"""Whether the caller reaches a patient row already read, shared by the sync services
(`service.reachable`) and the paths on the event loop (registry/immunizations/async_record.py),
which book a refusal on the trail instead of inserting it."""

from __future__ import annotations

import uuid

from registry.context import ServiceContext
from registry.errors import Conflict, NotFound
from registry.patients.repository import Access
from security.access.permissions import Permission
from security.audit import trail as audit
from security.audit.trail import PatientRef

NOT_FOUND = "patient not found"


class Merged(Conflict):
    """The record was merged into another by a data steward (issue 13): writes and reads of
    doses go to the survivor, which the problem names (`merged_into`)."""

    def __init__(self, survivor: uuid.UUID) -> None:
        super().__init__("this record was merged into another; use the surviving record")
        self.merged_into = survivor
        self.code = "merged"  # a batch item's rejection code (registry/sync/batch.py)
        self.extensions = {"reason": "merged", "merged_into": str(survivor)}


def _ref(row) -> PatientRef:
    return PatientRef(row.id, row.province, row.district)


def reach(ctx: ServiceContext, row, access: Access, patient_id: uuid.UUID, action: str, *, allow: tuple[Access, ...],
          break_glass: bool, record):
    """`reachable`'s decision on the row read: (row, outside_capture_scope), or the refusal,
    recorded through `record(action, outcome, **event)` (the async paths book it instead)."""
    if row is None:
        record(action, audit.NOT_FOUND, resource_id=patient_id)
        raise NotFound(NOT_FOUND)
    emergency = break_glass and ctx.access.break_glass and ctx.principal.can(Permission.PATIENT_BREAK_GLASS)
    if access in allow or emergency:
        if row.merged_into is not None:
            record(action, audit.CONFLICT, resource_id=patient_id, patient=_ref(row),
                   outside_capture_scope=access is not Access.CAPTURE, detail={"reason": "merged"})
            raise Merged(row.merged_into)
        return row, access is not Access.CAPTURE
    record(action, audit.DENIED, resource_id=patient_id, patient=_ref(row), outside_capture_scope=True)
    raise NotFound(NOT_FOUND)
