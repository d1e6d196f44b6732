"""Parsed schedules, kept per runtime (process), keyed by the schedule row's id.

Invariant: schedule rows are never changed (a new version is a new row, models.py), so a parsed
schedule cached under its row id can never go stale. Which row is in force is still asked of the
database on each use (one small indexed query), so a schedule loaded by another process is seen.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from datetime import date

from sqlalchemy.orm import Session

from registry.immunizations.vaccines import VACCINES
from registry.schedules import engine


@dataclass
class ScheduleCache:
    _parsed: dict[uuid.UUID, engine.Schedule] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def parsed(self, row) -> engine.Schedule:
        found = self._parsed.get(row.id)
        if found is None:
            found = engine.parse(row.document, VACCINES)
            with self._lock:
                self._parsed[row.id] = found
        return found

    def in_force(self, session: Session, custodian: str, as_of: date):
        """(row, parsed schedule) of the schedule in force for `custodian`, or (None, None)."""
        from registry.schedules.service import in_force  # the service imports patients; keep this module light

        row = in_force(session, custodian, as_of)
        return (row, self.parsed(row)) if row is not None else (None, None)
