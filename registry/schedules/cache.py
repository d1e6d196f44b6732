"""Parsed schedules, kept per runtime (process), keyed by the schedule row's id.

Invariant: schedule rows are never changed (a new version is a new row, models.py), so a parsed
schedule cached under its row id can never go stale. Which row is in force is still asked of the
database on each use, so a schedule loaded by another process is seen: one small indexed query
over the province and its country together, which reads the row's id and not its document (the
document is read once per process, when its row is first in force). A province's country never
changes, so it is remembered too.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.immunizations.vaccines import VACCINES
from registry.schedules import engine
from registry.schedules.models import ScheduleRow


@dataclass
class ScheduleCache:
    _parsed: dict[uuid.UUID, engine.Schedule] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _countries: dict[str, str] = field(default_factory=dict)

    def parsed(self, row) -> engine.Schedule:
        found = self._parsed.get(row.id)
        if found is None:
            found = engine.parse(row.document, VACCINES)
            with self._lock:
                self._parsed[row.id] = found
        return found

    def in_force(self, session: Session, custodian: str, as_of: date):
        """(row, parsed schedule) of the schedule in force for `custodian`, or (None, None): the
        latest effective one of the province, else of its country (`service.in_force`'s rule).
        The row carries id, code, version, jurisdiction_code and effective_from, not the document."""
        from registry.schedules.service import country_of  # the service imports patients; keep this module light

        country = self._countries.get(custodian)
        if country is None:
            country = country_of(session, custodian)
            if country is not None:  # a code not (yet) in the reference data is looked up again
                self._countries[custodian] = country
        codes = [c for c in (custodian, country) if c is not None]
        t = ScheduleRow.__table__
        row = session.execute(
            select(t.c.id, t.c.code, t.c.version, t.c.jurisdiction_code, t.c.effective_from)
            .where(t.c.jurisdiction_code.in_(codes), t.c.effective_from <= as_of)
            .order_by((t.c.jurisdiction_code == custodian).desc(), t.c.effective_from.desc(), t.c.loaded_at.desc())
            .limit(1)).first()
        if row is None:
            return None, None
        found = self._parsed.get(row.id)
        if found is None:
            document = session.execute(select(t.c.document).where(t.c.id == row.id)).scalar_one()
            found = engine.parse(document, VACCINES)
            with self._lock:
                self._parsed[row.id] = found
        return row, found
