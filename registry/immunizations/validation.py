"""Checks a dose must pass before it is recorded (or a correction before it replaces a dose).

Rules, each with a machine-readable code (the problem's `reason` member):
- `dose_number_out_of_range`, `before_birth`, `in_future`: impossible records, never overridable.
  "Today" is the local date (registry/clock.py: UTC+5), so a dose given today in Pakistan is
  accepted while it is still yesterday in UTC.
- the schedule engine's reasons for an invalid dose (`too_early_for_age`, `interval_too_short`,
  `after_maximum_age`, `series_complete`, and `duplicate`: the dose number or the day of a dose
  the series already counts), judged against the schedule in force for the patient's custodian
  province today, exactly as the dose list judges the same dose (`validities`): a dose that
  repeats an *invalid* dose (Penta-1 again after one given too early) is valid, as the engine
  says. A dose the schedule does not list (`not_in_schedule`, e.g. a booster) is accepted.
- With no schedule in force, `duplicate`: the patient already has a completed dose of this
  vaccine and dose number (the list says the same of the later-recorded one).
Duplicates and schedule violations are refused unless the caller gives an override reason; then
the dose is recorded and marked with the rule it broke.

Reported doses (issue 12: given elsewhere or earlier, `reported=True`) are judged the same way
but never refused for these rules, and their dose number is checked only against the
impossible (a vaccine outside the EPI list has no range). A dose with no number (None) gets the
number the order of the series' valid doses gives it (the engine's `counted_as`), or the next
position in its series when it does not count; the verdict carries it as `dose_number`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from typing import Callable, Iterable

from registry.clock import local_today
from registry.context import ServiceContext
from registry.errors import InvalidInput
from registry.immunizations import repository as repo
from registry.immunizations.vaccines import VACCINES, first_dose
from registry.schedules import engine, memo

OUT_OF_RANGE, BEFORE_BIRTH, IN_FUTURE, DUPLICATE = "dose_number_out_of_range", "before_birth", "in_future", "duplicate"
_MESSAGES = {
    BEFORE_BIRTH: "date given is before the patient's birth date",
    IN_FUTURE: "date given cannot be in the future",
    DUPLICATE: "the patient already has this dose of this vaccine",
    engine.TOO_EARLY: "the dose is given before the minimum age for it in the schedule",
    engine.INTERVAL_TOO_SHORT: "the dose is given too soon after the previous dose of the series",
    engine.AFTER_MAX_AGE: "the dose is given after the maximum age for it in the schedule",
    engine.SERIES_COMPLETE: "the series is already complete",
}
_FIELD = {engine.INTERVAL_TOO_SHORT: "date_given", engine.TOO_EARLY: "date_given", engine.AFTER_MAX_AGE: "date_given",
          DUPLICATE: "dose_number", engine.SERIES_COMPLETE: "dose_number", BEFORE_BIRTH: "date_given", IN_FUTURE: "date_given"}


class DoseRefused(InvalidInput):
    """A 422 whose problem carries `reason` (the rule code) and whether an override may pass it."""

    def __init__(self, code: str, *, overridable: bool, message: str | None = None, field: str | None = None) -> None:
        text = message or _MESSAGES[code]
        if overridable:
            text += "; to record it anyway, give an override_reason (10-500 characters)"
        super().__init__(text, field=field or _FIELD.get(code, "date_given"))
        self.code = code
        self.overridable = overridable
        self.extensions = {"reason": code, "overridable": overridable}


@dataclass(frozen=True)
class Verdict:
    """The schedule's view of the dose: `valid`, `invalid` or `not_in_schedule` (None: no schedule),
    and the rule it breaks (None when it breaks none)."""

    validity: str | None
    rule: str | None
    dose_number: int | None = None  # the number to record (given, or inferred when none was)


def engine_dose(row) -> engine.Dose:
    """A dose row as the engine sees it: an inferred dose number is no number (None), so that a
    dose reported later but given earlier takes its place in the series."""
    inferred = getattr(row, "dose_number_inferred", False)
    return engine.Dose(row.vaccine, None if inferred else row.dose_number, row.date_given, row.status)


def check(ctx: ServiceContext, patient, vaccine: str, dose_number: int, date_given: date, *,
          replacing: uuid.UUID | None = None, reported: bool = False) -> Verdict:
    """Raise DoseRefused for an impossible dose; otherwise return the verdict, whose `rule` the
    caller must refuse unless overridden. `replacing` is the dose a correction supersedes."""
    today = local_today()
    return judge(patient, vaccine, dose_number, date_given, lambda: repo.for_patient(ctx.session, patient.id),
                 lambda: ctx.runtime.schedules.in_force(ctx.session, patient.custodian, today)[1], today, replacing=replacing,
                 reported=reported)


def judge(patient, vaccine: str, dose_number: int | None, date_given: date, existing_doses: Callable[[], Iterable],
          schedule: Callable[[], engine.Schedule | None], today: date, *, replacing: uuid.UUID | None = None,
          reported: bool = False, judged: bool = True) -> Verdict:
    """`check` without the database, for callers that hold a snapshot (registry/immunizations/batch.py):
    `existing_doses()` gives the patient's dose rows (id, vaccine, dose_number, date_given, status),
    in `repository.for_patient`'s order; `schedule()` the schedule in force for its custodian.
    Both are called only when the rules before them have passed, as `check` reads them.
    `judged=False` (bulk import) stops before the schedule: the verdict has no validity, and an
    inferred number is the dose's position, which `inferred_numbers` corrects for the whole child."""
    spec = VACCINES.get(vaccine)
    if spec is not None and dose_number is not None and not reported \
            and not first_dose(vaccine) <= dose_number <= spec["max_dose"]:
        raise DoseRefused(OUT_OF_RANGE, overridable=False, field="dose_number",
                          message=f"dose number for {vaccine} must be between {first_dose(vaccine)} and {spec['max_dose']}")
    if date_given < patient.birth_date:
        raise DoseRefused(BEFORE_BIRTH, overridable=False)
    if date_given > today:
        raise DoseRefused(IN_FUTURE, overridable=False)
    existing = list(existing_doses()) if replacing is None else [d for d in existing_doses() if d.id != replacing]
    fallback = dose_number if dose_number is not None else 1 + sum(
        1 for d in existing if d.status == engine.COUNTED_STATUS and d.vaccine == vaccine and d.date_given <= date_given)
    repeated = recorded_twice(existing, vaccine, dose_number)
    in_force = schedule() if judged else None
    if in_force is None:  # only the plain duplicate rule
        return Verdict(engine.INVALID, DUPLICATE, dose_number) if repeated else Verdict(None, None, fallback)
    # a series is made of one vaccine's doses; the engine's judgement of them, remembered per
    # history shape (exact: registry/schedules/memo.py). The new dose is the last of any identical
    # ones (the engine's sorts are stable), as the list, which gives identical doses their results
    # in recording order, will say
    doses = [engine_dose(d) for d in existing if d.vaccine == vaccine and d.status == engine.COUNTED_STATUS]
    status, reason, _, counted_as = memo.memo_of(in_force).last(
        vaccine, patient.birth_date, [*doses, engine.Dose(vaccine, dose_number, date_given)])
    if status == engine.NOT_IN_SCHEDULE and repeated:  # outside the schedule, the plain rule
        return Verdict(engine.INVALID, DUPLICATE, dose_number)
    return Verdict(status, reason, dose_number if dose_number is not None else
                   (counted_as if counted_as is not None else fallback))


def validities(schedule: engine.Schedule | None, patient, rows, as_of: date) -> dict[uuid.UUID, tuple[str, str | None]]:
    """Each completed dose row's (validity, reason) under `schedule`, for the dose view (component
    rows of combination products included: they are ordinary doses to the engine). Same rules as
    `judge`, so the list states what the response to recording a dose stated (unless a dose dated
    earlier was recorded since, which the engine's date order takes into account)."""
    counted = [r for r in rows if r.status == engine.COUNTED_STATUS]
    repeats, seen = set(), set()  # later-recorded doses of a vaccine and given number already recorded
    for row in sorted(counted, key=lambda r: r.recorded_at):
        key = (row.vaccine, engine_dose(row).dose_number)
        if key[1] is not None and key in seen:
            repeats.add(row.id)
        seen.add(key)
    if schedule is None:  # only the duplicate rule
        return {i: (engine.INVALID, DUPLICATE) for i in repeats}
    result = engine.evaluate(schedule, patient.birth_date, patient.sex, [engine_dose(r) for r in counted], as_of, forecast=False)
    pending: dict[tuple, list] = {}
    for r in result.recorded:
        pending.setdefault((r.vaccine, r.dose_number, r.date_given), []).append(r)
    out = {}
    for row in sorted(counted, key=lambda r: (r.date_given, r.recorded_at)):
        queue = pending.get((row.vaccine, engine_dose(row).dose_number, row.date_given))
        if queue:
            r = queue.pop(0)
            out[row.id] = (engine.INVALID, DUPLICATE) if r.status == engine.NOT_IN_SCHEDULE and row.id in repeats \
                else (r.status, r.reason)
    return out


def inferred_numbers(schedule: engine.Schedule | None, patient, rows, as_of: date) -> dict[uuid.UUID, int]:
    """The dose numbers of the patient's inferred dose rows (objects or dicts) as the order of the
    series' doses gives them now, for the rows whose stored number differs: a dose reported later
    but given earlier moves the others along. A dose that does not count takes its position."""
    def get(r, k):
        return r[k] if isinstance(r, dict) else getattr(r, k)

    wanted = {get(r, "vaccine") for r in rows if get(r, "dose_number_inferred") and get(r, "status") == engine.COUNTED_STATUS}
    if not wanted:
        return {}
    # on one day, a dose whose number was given takes its place before the inferred ones (then the
    # id): the order no longer depends on which of two such doses drew the smaller random id
    counted = sorted((r for r in rows if get(r, "status") == engine.COUNTED_STATUS and get(r, "vaccine") in wanted),
                     key=lambda r: (get(r, "date_given"), bool(get(r, "dose_number_inferred")), str(get(r, "id"))))
    pending: dict[tuple, list] = {}
    if schedule is not None:
        view = [engine.Dose(get(r, "vaccine"), None if get(r, "dose_number_inferred") else get(r, "dose_number"),
                            get(r, "date_given")) for r in counted]
        # the engine itself, on the wanted vaccines' series only: a child's whole history has too many
        # shapes for the memo to pay (bench/RESULTS.md 2026-12-03 13:20: renumbering through it cost more)
        only = tuple(s for s in schedule.series if s.vaccine in wanted)
        for res in engine.evaluate(schedule, patient.birth_date, patient.sex, view, as_of, forecast=False, only=only).recorded:
            pending.setdefault((res.vaccine, res.dose_number, res.date_given), []).append(res)
    position: dict[str, int] = {}
    out = {}
    for r in counted:
        vaccine = get(r, "vaccine")
        position[vaccine] = position.get(vaccine, 0) + 1
        if not get(r, "dose_number_inferred"):
            continue
        queue = pending.get((vaccine, None, get(r, "date_given")))
        res = queue.pop(0) if queue else None
        number = res.counted_as if res is not None and res.counted_as is not None else position[vaccine]
        if number != get(r, "dose_number"):
            out[get(r, "id")] = number
    return out


def recorded_twice(existing: Iterable, vaccine: str, dose_number: int | None) -> bool:
    """The patient already has a completed dose of this vaccine with this (given, not inferred) number."""
    return dose_number is not None and any(
        d.status == engine.COUNTED_STATUS and d.vaccine == vaccine and d.dose_number == dose_number
        and not getattr(d, "dose_number_inferred", False) for d in existing)
