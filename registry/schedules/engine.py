"""The schedule engine: pure functions (no database, no HTTP) that evaluate a patient's doses
against a schedule document (registry/schedules/data/*.json).

Rules (the schedule file's `assumptions` say the same in prose):
- A series is an ordered list of doses of one vaccine. Recorded doses fill the series' slots
  in date order: a valid dose fills the next unfilled slot, so an interrupted series resumes
  where it stopped (a late dose 2 is due from dose 1 + the minimum interval; nothing restarts).
- A recorded dose is valid unless: it is a duplicate (same date, or same recorded dose number,
  as a dose already counted in the series), the series is already complete, it is given before
  the slot's minimum age, less than the minimum interval after the previous counted dose, or
  after the slot's maximum age (inclusive). Invalid doses do not count.
- Voided (`entered-in-error`) and `superseded` doses are ignored entirely.
- A dose with no dose number (None: a reported dose whose number nobody wrote down) belongs to
  the first series of its vaccine whose last slot's maximum age it does not pass (OPV within 14
  days of birth is OPV-0, later OPV-1..3), takes the slot the order of valid doses gives it
  (`counted_as`), and is never a duplicate by number.
- Each unfilled slot gets earliest / recommended / latest dates and a status as of a date:
  `not_yet_due` before recommended, `due` up to latest, `overdue` after latest,
  `not_applicable` once the last valid day (birth + max age) has passed or can no longer be
  met. A slot after an unfilled one is projected from the earlier slot's next possible date
  (never before `as_of`), so it is never due before the dose it depends on.
"""

from __future__ import annotations

import calendar
import functools
import re
from dataclasses import dataclass, field
from functools import lru_cache
from datetime import date, timedelta
from typing import Iterable

SCHEMA_VERSION = 1
COUNTED_STATUS = "completed"
_DURATION = re.compile(r"^(\d{1,3})([dwmy])$")

VALID, INVALID, NOT_IN_SCHEDULE = "valid", "invalid", "not_in_schedule"
DUE, OVERDUE, NOT_YET_DUE, NOT_APPLICABLE = "due", "overdue", "not_yet_due", "not_applicable"
TOO_EARLY, INTERVAL_TOO_SHORT, AFTER_MAX_AGE = "too_early_for_age", "interval_too_short", "after_maximum_age"
DUPLICATE, SERIES_COMPLETE = "duplicate", "series_complete"


class ScheduleError(ValueError):
    """A schedule document that does not follow the format."""


@functools.lru_cache(maxsize=512)  # a schedule has a few dozen distinct durations
def parse_duration(text: str) -> tuple[int, str]:
    m = _DURATION.match(text or "")
    if not m:
        raise ScheduleError(f"bad duration {text!r}: expected <n>d, <n>w, <n>m or <n>y")
    return int(m.group(1)), m.group(2)


@lru_cache(maxsize=8192)
def add(start: date, duration: str | None) -> date:
    """start + duration; months and years are calendar ones (31 Jan + 1m = 28/29 Feb)."""
    if duration is None:
        return start
    n, unit = parse_duration(duration)
    if unit == "d":
        return start + timedelta(days=n)
    if unit == "w":
        return start + timedelta(weeks=n)
    months = n if unit == "m" else 12 * n
    y, m = divmod(start.month - 1 + months, 12)
    year, month = start.year + y, m + 1
    return date(year, month, min(start.day, calendar.monthrange(year, month)[1]))


@dataclass(frozen=True)
class Slot:
    series: str
    vaccine: str
    dose: int
    min_age: str
    recommended_age: str
    max_age: str | None
    min_interval: str | None
    recommended_interval: str | None
    grace: str


@dataclass(frozen=True)
class Series:
    id: str
    vaccine: str
    sex: str | None
    slots: tuple[Slot, ...]


@dataclass(frozen=True)
class Schedule:
    code: str
    version: str
    jurisdiction: str
    effective_from: date
    series: tuple[Series, ...]


def parse(document: dict, vaccines: Iterable[str] | None = None) -> Schedule:
    """Validate a schedule document and build the engine's view of it (raises ScheduleError)."""
    try:
        if document.get("schema_version") != SCHEMA_VERSION:
            raise ScheduleError(f"unsupported schema_version {document.get('schema_version')!r}")
        known = set(vaccines) if vaccines is not None else None
        grace = document.get("overdue_grace", "4w")
        parse_duration(grace)
        series, seen = [], set()
        for s in document["series"]:
            if s["id"] in seen:
                raise ScheduleError(f"series {s['id']!r} appears twice")
            seen.add(s["id"])
            if known is not None and s["vaccine"] not in known:
                raise ScheduleError(f"series {s['id']!r}: unknown vaccine {s['vaccine']!r}")
            slots = []
            for d in s["doses"]:
                slot = Slot(s["id"], s["vaccine"], int(d["dose"]), d["min_age"], d.get("recommended_age", d["min_age"]),
                            d.get("max_age"), d.get("min_interval"), d.get("recommended_interval", d.get("min_interval")),
                            d.get("grace", grace))
                for text in (slot.min_age, slot.recommended_age, slot.max_age, slot.min_interval, slot.recommended_interval, slot.grace):
                    if text is not None:
                        parse_duration(text)
                slots.append(slot)
            if not slots or len({x.dose for x in slots}) != len(slots):
                raise ScheduleError(f"series {s['id']!r}: doses missing or repeated")
            series.append(Series(s["id"], s["vaccine"], s.get("sex"), tuple(slots)))
        pairs = [(x.vaccine, x.dose) for s in series for x in s.slots]
        if len(set(pairs)) != len(pairs):
            raise ScheduleError("a vaccine dose number belongs to two series")
        return Schedule(str(document["code"]), str(document["version"]), str(document["jurisdiction"]),
                        date.fromisoformat(str(document["effective_from"])), tuple(series))
    except (KeyError, TypeError, AttributeError) as exc:
        raise ScheduleError(f"malformed schedule: {type(exc).__name__} {exc}") from None


@dataclass(frozen=True)
class Dose:
    vaccine: str
    dose_number: int | None
    date_given: date
    status: str = COUNTED_STATUS


@dataclass(frozen=True)
class RecordedResult:
    vaccine: str
    dose_number: int | None
    date_given: date
    status: str  # valid / invalid / not_in_schedule
    reason: str | None = None
    series: str | None = None
    counted_as: int | None = None  # the series slot a valid dose fills


@dataclass(frozen=True)
class Forecast:
    series: str
    vaccine: str
    dose_number: int
    status: str  # due / overdue / not_yet_due / not_applicable
    earliest: date
    recommended: date
    latest: date


@dataclass
class Evaluation:
    recorded: list[RecordedResult] = field(default_factory=list)
    forecast: list[Forecast] = field(default_factory=list)


def _check(slot: Slot, birth: date, given: date, previous: date | None) -> str | None:
    if given < add(birth, slot.min_age):
        return TOO_EARLY
    if slot.max_age is not None and given > add(birth, slot.max_age):
        return AFTER_MAX_AGE
    if previous is not None and slot.min_interval is not None and given < add(previous, slot.min_interval):
        return INTERVAL_TOO_SHORT
    return None


def _series_for(schedule: Schedule) -> dict[tuple[str, int], Series]:
    index = schedule.__dict__.get("_index")  # built once per parsed schedule (a frozen dataclass)
    if index is None:
        index = {(x.vaccine, x.dose): s for s in schedule.series for x in s.slots}
        object.__setattr__(schedule, "_index", index)
    return index


def _series_without_number(schedule: Schedule, vaccine: str, birth: date, given: date) -> Series | None:
    candidates = [s for s in schedule.series if s.vaccine == vaccine]
    for s in candidates:
        last = s.slots[-1].max_age
        if last is None or given <= add(birth, last):
            return s
    return candidates[-1] if candidates else None


def _evaluate_series(s: Series, birth: date, doses: list[Dose], as_of: date, out: Evaluation, forecast: bool = True) -> None:
    counted: list[tuple[Dose, Slot]] = []
    for d in sorted(doses, key=lambda d: (d.date_given, -1 if d.dose_number is None else d.dose_number)):
        if any(c.date_given == d.date_given or (d.dose_number is not None and c.dose_number == d.dose_number)
               for c, _ in counted):
            out.recorded.append(RecordedResult(d.vaccine, d.dose_number, d.date_given, INVALID, DUPLICATE, s.id))
            continue
        if len(counted) == len(s.slots):
            out.recorded.append(RecordedResult(d.vaccine, d.dose_number, d.date_given, INVALID, SERIES_COMPLETE, s.id))
            continue
        slot = s.slots[len(counted)]
        reason = _check(slot, birth, d.date_given, counted[-1][0].date_given if counted else None)
        if reason:
            out.recorded.append(RecordedResult(d.vaccine, d.dose_number, d.date_given, INVALID, reason, s.id))
            continue
        counted.append((d, slot))
        out.recorded.append(RecordedResult(d.vaccine, d.dose_number, d.date_given, VALID, None, s.id, slot.dose))
    if not forecast:
        return
    previous = counted[-1][0].date_given if counted else None
    prev_recommended = previous
    for slot in s.slots[len(counted):]:
        f = _forecast(slot, birth, previous, prev_recommended, as_of)
        out.forecast.append(f)
        # the next slot depends on this one being given: not before its earliest, nor before today
        previous, prev_recommended = max(f.earliest, as_of), max(f.recommended, as_of)


def _forecast(slot: Slot, birth: date, previous: date | None, prev_recommended: date | None, as_of: date) -> Forecast:
    earliest = add(birth, slot.min_age)
    recommended = add(birth, slot.recommended_age)
    if previous is not None and slot.min_interval is not None:
        earliest = max(earliest, add(previous, slot.min_interval))
    if prev_recommended is not None and slot.recommended_interval is not None:
        recommended = max(recommended, add(prev_recommended, slot.recommended_interval))
    recommended = max(recommended, earliest)
    latest = add(recommended, slot.grace)
    last_day = add(birth, slot.max_age) if slot.max_age is not None else None
    if last_day is not None:
        latest = min(latest, last_day)
        if earliest > last_day or as_of > last_day:
            latest = max(earliest, last_day)
            recommended = min(recommended, latest)
            return Forecast(slot.series, slot.vaccine, slot.dose, NOT_APPLICABLE, earliest, recommended, latest)
        recommended = min(recommended, latest)
    if as_of < recommended:
        status = NOT_YET_DUE
    elif as_of <= latest:
        status = DUE
    else:
        status = OVERDUE
    return Forecast(slot.series, slot.vaccine, slot.dose, status, earliest, recommended, latest)


def evaluate(schedule: Schedule, birth_date: date, sex: str | None, doses: Iterable[Dose | tuple], as_of: date,
             *, forecast: bool = True, only: tuple[Series, ...] | None = None) -> Evaluation:
    """Every recorded dose with its status and every future dose of the schedule with its dates.

    `doses` are Dose objects or (vaccine, dose_number, date_given, status) tuples; voided and
    superseded ones are ignored. Series restricted to a sex are skipped for the other sexes.
    `forecast=False` judges the recorded doses only (no future dates: what recording and the coverage
    aggregates need). `only`: the series of the vaccines of `doses` (all of them, in the schedule's
    order), to evaluate those alone (registry/schedules/memo.py judges one vaccine at a time)."""
    index = _series_for(schedule)
    chosen = schedule.series if only is None else only
    by_series: dict[str, list[Dose]] = {s.id: [] for s in chosen}
    out = Evaluation()
    for raw in doses:
        d = raw if isinstance(raw, Dose) else Dose(*raw)
        if d.status != COUNTED_STATUS:
            continue
        s = index.get((d.vaccine, d.dose_number)) if d.dose_number is not None else \
            _series_without_number(schedule, d.vaccine, birth_date, d.date_given)
        if s is None:
            out.recorded.append(RecordedResult(d.vaccine, d.dose_number, d.date_given, NOT_IN_SCHEDULE))
            continue
        by_series[s.id].append(d)
    for s in chosen:
        if (s.sex is not None and s.sex != sex or not forecast) and not by_series[s.id]:
            continue
        _evaluate_series(s, birth_date, by_series[s.id], as_of, out, forecast)
    out.recorded.sort(key=lambda r: (r.date_given, r.vaccine, -1 if r.dose_number is None else r.dose_number))
    return out
