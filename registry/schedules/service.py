"""Schedule use cases: load a schedule document (CLI, init) and a patient's schedule (API).

- Loading validates the document with the engine (known vaccines, durations) and the
  jurisdiction (a country or a province). Loading the same code, version and jurisdiction again
  changes nothing: a new version is a new row.
- A patient is evaluated against the schedule in force for their custodian province on the
  evaluation date, else the country's (models.py). Reading it writes exactly one audit event,
  with no clinical data in it (no vaccine, dose or date).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict
from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from registry.clock import local_today
from registry.context import ServiceContext
from registry.errors import InvalidInput, NotFound
from registry.immunizations import repository as doses
from registry.immunizations.validation import engine_dose
from registry.immunizations.vaccines import VACCINES
from registry.jurisdictions import repository as jurisdictions
from registry.patients.repository import Access
from registry.patients.service import reachable
from registry.schedules import engine
from registry.schedules.repository import country_of, document, in_force  # noqa: F401 - the queries, re-exported
from registry.schedules.models import ScheduleRow
from security.audit import trail as audit
from security.audit.trail import PatientRef

DEFAULT_FILE = Path(__file__).parent / "data" / "pk-epi-2026.json"
ACTION = "immunization.schedule"
_REACH = (Access.CAPTURE, Access.SEARCH)
_LEVELS = ("country", "province")


def read_file(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot read the schedule file: {type(exc).__name__}", field="file") from None


def load(session: Session, document: dict, jurisdiction: str | None = None) -> tuple[ScheduleRow, bool]:
    """Store a schedule for `jurisdiction` (default: the document's). Returns (row, added)."""
    try:
        parsed = engine.parse(document, VACCINES)
    except engine.ScheduleError as exc:
        raise InvalidInput(str(exc), field="document") from None
    code = jurisdiction or parsed.jurisdiction
    place = jurisdictions.get(session, code)
    if place is None or place.level not in _LEVELS:
        raise InvalidInput("a schedule belongs to a known country or province", field="jurisdiction")
    t = ScheduleRow.__table__
    existing = session.execute(select(ScheduleRow).where(
        t.c.code == parsed.code, t.c.version == parsed.version, t.c.jurisdiction_code == code)).scalar_one_or_none()
    if existing is not None:
        return existing, False
    row = ScheduleRow(id=uuid.uuid4(), code=parsed.code, version=parsed.version, jurisdiction_code=code,
                      effective_from=parsed.effective_from, document=document, loaded_at=datetime.now(UTC))
    session.add(row)
    session.flush()
    return row, True


def load_default_if_none(session: Session) -> int:
    if session.execute(select(func.count()).select_from(ScheduleRow)).scalar_one():
        return 0
    return int(load(session, read_file(DEFAULT_FILE))[1])


def for_patient(ctx: ServiceContext, patient_id: uuid.UUID, as_of: date | None = None) -> dict:
    as_of = as_of or local_today()  # the clinic's calendar, as dose validation uses
    prow, outside = reachable(ctx, patient_id, ACTION, allow=_REACH, break_glass=True)
    pref = PatientRef(prow.id, prow.province, prow.district)
    row, schedule = ctx.runtime.schedules.in_force(ctx.session, prow.custodian, as_of)  # parsed once per process
    if row is None:
        ctx.trail.record(ctx.session, ACTION, audit.NOT_FOUND, resource_type="Immunization", patient=pref,
                         outside_capture_scope=outside, detail={"reason": "no schedule in force"})
        raise NotFound("no immunization schedule is in force for this patient's province")
    given = [engine_dose(d) for d in doses.for_patient(ctx.session, patient_id)]  # inferred numbers: the engine's
    result = engine.evaluate(schedule, prow.birth_date, prow.sex, given, as_of)
    ctx.trail.record(ctx.session, ACTION, audit.SUCCESS, resource_type="Immunization", patient=pref,
                     outside_capture_scope=outside, detail={"schedule": f"{row.code}@{row.version}", "jurisdiction": row.jurisdiction_code})
    return {
        "patient_id": prow.id, "as_of": as_of,
        "schedule": {"code": row.code, "version": row.version, "jurisdiction": row.jurisdiction_code,
                     "effective_from": row.effective_from},
        "doses": [asdict(r) for r in result.recorded], "forecast": [asdict(f) for f in result.forecast],
    }
