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

from sqlalchemy.orm import Session

from registry.immunizations.vaccines import VACCINES
from registry.schedules import engine, repository


@dataclass
class ScheduleCache:
    _parsed: dict[uuid.UUID, engine.Schedule] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _countries: dict[str, str] = field(default_factory=dict)

    def known_countries(self) -> dict[str, str]:
        """custodian -> country, as remembered so far (the dose on the event loop reads the row in
        force in its first round trip when these are known)."""
        return dict(self._countries)

    def parsed(self, schedule_id: uuid.UUID) -> engine.Schedule | None:
        """The parsed schedule of a row already read once, or None."""
        return self._parsed.get(schedule_id)

    def in_force(self, session: Session, custodian: str, as_of: date):
        """(row, parsed schedule) of the schedule in force for `custodian` (`repository.in_force`'s
        rule and row), or (None, None). The document is read only when its row is first in force."""
        country = self._countries.get(custodian)
        if country is None:
            country = repository.country_of(session, custodian)
            if country is not None:  # a code not (yet) in the reference data is looked up again
                self._countries[custodian] = country
        row = repository.in_force(session, custodian, as_of, country=country)
        if row is None:
            return None, None
        found = self._parsed.get(row.id)
        if found is None:
            found = engine.parse(repository.document(session, row.id), VACCINES)
            with self._lock:
                self._parsed[row.id] = found
        return row, found
