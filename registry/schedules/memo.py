"""The schedule engine's judgement of one vaccine's doses (`engine.evaluate(..., forecast=False)`),
remembered per history *shape*, so that children whose histories differ only where the schedule
cannot tell them apart share one evaluation (issue 17: a campaign judges thousands of children
against the same few rules).

Why the shape is exact (the key holds everything the engine's result depends on, and nothing
the engine could tell apart is merged):
- With `forecast=False` the engine reads, of one vaccine's doses, only: their dose numbers (the
  series and slot a numbered dose belongs to, the duplicate rule), the order and equality of
  their dates (the series order, the duplicate-by-day rule), and comparisons of a date with
  `birth + age` (minimum and maximum ages, the series a dose with no number belongs to) and of a
  later date with `earlier date + interval` (minimum intervals). Sex and `as_of` only matter for
  the forecast.
- Each comparison is "a number of days is below a cut": `given < birth + min_age` is
  `age < cut`, `given > birth + max_age` is `age >= cut + 1`, and so on, where a cut is the
  number of days the duration spans from that start. Days and weeks span the same days from any
  start; months and years do not (31 Jan + 1m), so the cuts are computed for the child's birth
  date and for each earlier dose's date (`engine.add`, cached), and the key holds, for each
  age and each gap between two doses of different days, how many cuts it reaches (its band) and
  which cuts those are (the order of the cuts, `_bands`). Two histories with equal keys make every
  comparison the engine makes come out the same, so the engine's result, told as "dose i of the
  input: status, reason, series, slot", is the same.
- The key also holds the schedule's identity implicitly: one memo belongs to one parsed schedule
  (`engine.Schedule`, attached to it like the engine's own index), and parsed schedules are kept
  per schedule row id by `ScheduleCache`; rows are never changed (a new version is a new row), so
  when another schedule comes into force its judgements start from an empty memo, and the old
  memo goes when its parsed schedule does.
- Bounded: at most `MAX_ENTRIES` shapes a schedule (least recently used dropped first), and the
  cuts of at most `MAX_CUTS` start dates a vaccine (cleared when full).
`tests/test_schedule_memo.py` checks the exactness against the engine on random histories, and
that dropping any part of the key makes it wrong.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections import OrderedDict
from datetime import date
from typing import Iterable

from registry.schedules import engine

MAX_ENTRIES = 20_000
MAX_CUTS = 50_000
# a history of more dates than this goes to the engine directly: its key (every gap between two of
# its dates) would cost more than the engine (bench/RESULTS.md 2026-12-03 13:40: campaign OPV)
MAX_DATES = 8


class _Rules:
    """What the engine compares for one vaccine: the durations behind its cuts."""

    def __init__(self, schedule: engine.Schedule, vaccine: str) -> None:
        series = [s for s in schedule.series if s.vaccine == vaccine]
        self.series = series
        ages: set[tuple[str, int]] = set()
        intervals: set[str] = set()
        for s in series:
            for slot in s.slots:
                ages.add((slot.min_age, 0))  # given < birth + min_age
                if slot.max_age is not None:
                    ages.add((slot.max_age, 1))  # given > birth + max_age; given <= birth + last max_age
                if slot.min_interval is not None:
                    intervals.add(slot.min_interval)
        self.ages = tuple(sorted(ages))
        self.intervals = tuple(sorted(intervals))
        # days and weeks span the same days from any date: then the gaps' cuts are computed once
        self.fixed_gaps = all(engine.parse_duration(d)[1] in "dw" for d in self.intervals)
        self.by_start: dict[tuple[str, date], tuple] = {}  # (kind, start) -> (sorted cuts, their order)


class Memo:
    """One parsed schedule's remembered judgements (`evaluate`); thread-safe."""

    def __init__(self, schedule: engine.Schedule) -> None:
        self.schedule = schedule
        self._rules: dict[str, _Rules] = {}
        self._results: OrderedDict[tuple, tuple] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def _rules_of(self, vaccine: str) -> _Rules:
        rules = self._rules.get(vaccine)
        if rules is None:
            rules = self._rules[vaccine] = _Rules(self.schedule, vaccine)
        return rules

    def _bands(self, kind: str, rules: _Rules, start: date) -> tuple[list[int], tuple]:
        """(sorted cuts in days from `start`, their order): the ages (kind "age", from birth) or
        the intervals ("gap", from an earlier dose) the engine compares against."""
        found = rules.by_start.get((kind, start))
        if found is None:
            if kind == "age":
                cuts = [((engine.add(start, d) - start).days + plus, n) for n, (d, plus) in enumerate(rules.ages)]
            else:
                cuts = [((engine.add(start, d) - start).days, n) for n, d in enumerate(rules.intervals)]
            cuts.sort()
            found = ([c for c, _ in cuts], tuple(n for _, n in cuts))  # which durations a band's count stands for
            if len(rules.by_start) >= MAX_CUTS:
                rules.by_start.clear()
            rules.by_start[(kind, start)] = found
        return found

    def key(self, vaccine: str, birth: date, doses: list[engine.Dose]) -> tuple:
        rules = self._rules_of(vaccine)
        cuts, order = self._bands("age", rules, birth)
        if len(doses) == 1:
            d = doses[0]
            return vaccine, order, ((d.dose_number, bisect_right(cuts, (d.date_given - birth).days), 0),), ()
        days = sorted({d.date_given for d in doses})
        rank = {d: i for i, d in enumerate(days)}
        shape = tuple((d.dose_number, bisect_right(cuts, (d.date_given - birth).days), rank[d.date_given]) for d in doses)
        gaps: list = []
        if rules.intervals:
            if rules.fixed_gaps:  # the same cuts from every date: their order need not be in the key
                icuts = self._bands("gap", rules, birth)[0]
                for i, earlier in enumerate(days[:-1]):
                    gaps.extend(bisect_right(icuts, (later - earlier).days) for later in days[i + 1:])
            else:
                for i, earlier in enumerate(days[:-1]):
                    icuts, iorder = self._bands("gap", rules, earlier)
                    gaps.append(iorder)
                    gaps.extend(bisect_right(icuts, (later - earlier).days) for later in days[i + 1:])
        return vaccine, order, shape, tuple(gaps)

    def _told(self, vaccine: str, birth: date, doses: list[engine.Dose]) -> tuple:
        if len(doses) > MAX_DATES and len({d.date_given for d in doses}) > MAX_DATES:
            return _told(doses, engine.evaluate(self.schedule, birth, None, doses, birth, forecast=False,
                                                only=self._rules_of(vaccine).series).recorded)
        k = self.key(vaccine, birth, doses)
        with self._lock:
            told = self._results.get(k)
            if told is not None:
                self._results.move_to_end(k)
                self.hits += 1
                return told
        recorded = engine.evaluate(self.schedule, birth, None, doses, birth, forecast=False,
                                   only=self._rules_of(vaccine).series).recorded
        told = _told(doses, recorded)
        with self._lock:
            self.misses += 1
            self._results[k] = told
            if len(self._results) > MAX_ENTRIES:
                self._results.popitem(last=False)
        return told

    def last(self, vaccine: str, birth: date, doses: list[engine.Dose]) -> tuple:
        """(status, reason, series, slot) of the last of `doses` (all completed, of `vaccine`) as
        `validation.judge` reads it: the result of the last dose identical to it in the engine's
        order (its sorts are stable)."""
        told = self._told(vaccine, birth, doses)
        mine = doses[-1]
        for i, status, reason, series, counted_as in reversed(told):
            d = doses[i]
            if d.dose_number == mine.dose_number and d.date_given == mine.date_given:
                return status, reason, series, counted_as
        raise AssertionError("the engine judged every dose it was given")

    def evaluate(self, vaccine: str, birth: date, doses: Iterable[engine.Dose]) -> list[engine.RecordedResult]:
        """`engine.evaluate(schedule, birth, sex, doses, as_of, forecast=False).recorded` for doses of
        one `vaccine` (any sex and `as_of`: the judgement does not read them)."""
        doses = [d for d in doses if d.status == engine.COUNTED_STATUS]
        if not doses:
            return []
        told = self._told(vaccine, birth, doses)
        out = []
        for i, status, reason, series, counted_as in told:
            d = doses[i]
            out.append(engine.RecordedResult(d.vaccine, d.dose_number, d.date_given, status, reason, series, counted_as))
        return out


def _told(doses: list[engine.Dose], recorded: list[engine.RecordedResult]) -> tuple:
    """The engine's results as (input index, status, reason, series, slot), in its order."""
    queues: dict[tuple, list[int]] = {}
    for i, d in enumerate(doses):
        queues.setdefault((d.dose_number, d.date_given), []).append(i)
    return tuple((queues[(r.dose_number, r.date_given)].pop(0), r.status, r.reason, r.series, r.counted_as)
                 for r in recorded)


_ATTACH = threading.Lock()


def memo_of(schedule: engine.Schedule) -> Memo:
    """The memo of a parsed schedule (made on first use, kept on the frozen object)."""
    memo = schedule.__dict__.get("_memo")
    if memo is None:
        with _ATTACH:
            memo = schedule.__dict__.get("_memo")
            if memo is None:
                memo = Memo(schedule)
                object.__setattr__(schedule, "_memo", memo)
    return memo


def evaluate(schedule: engine.Schedule, birth: date, doses: Iterable[engine.Dose]) -> list[engine.RecordedResult]:
    """`engine.evaluate(..., forecast=False).recorded` for doses of any vaccines, remembered per
    vaccine: the same results in the same order (the engine's order is by date, vaccine and
    number, stable within a vaccine)."""
    by_vaccine: dict[str, list[engine.Dose]] = {}
    for d in doses:
        by_vaccine.setdefault(d.vaccine, []).append(d)
    memo = memo_of(schedule)
    out = [r for vaccine, mine in by_vaccine.items() for r in memo.evaluate(vaccine, birth, mine)]
    if len(by_vaccine) > 1:
        out.sort(key=lambda r: (r.date_given, r.vaccine, -1 if r.dose_number is None else r.dose_number))
    return out
