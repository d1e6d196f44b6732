"""Property: the remembered judgement (registry/schedules/memo.py) equals the schedule engine's
(`engine.evaluate(..., forecast=False).recorded`) for random histories, under the schedule in
service and under a schedule whose month and week durations interleave differently from one
birth date to the next; and dropping any part of the memo's key makes it wrong (the key holds
nothing it does not need). A new schedule row gets its own memo (invalidation), and the memo is
bounded."""

from __future__ import annotations

import json
import random
from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.immunizations.vaccines import VACCINES
from registry.schedules import engine, memo
from registry.schedules.service import DEFAULT_FILE

SERVICE = json.loads(DEFAULT_FILE.read_text(encoding="utf-8"))
# durations chosen so that their order in days depends on the start date: 4w = 28 days, 1m = 28
# to 31; 2m = 59 to 62, 60d, 9w = 63; the same for the intervals
TIGHT = {"schema_version": 1, "code": "tight", "version": "1", "jurisdiction": "PK", "effective_from": "2026-01-01",
         "series": [
             {"id": "A", "vaccine": "OPV", "doses": [
                 {"dose": 1, "min_age": "4w", "max_age": "2m"},
                 {"dose": 2, "min_age": "1m", "max_age": "9w", "min_interval": "1m"},
                 {"dose": 3, "min_age": "30d", "max_age": "60d", "min_interval": "4w"}]},
             {"id": "B", "vaccine": "OPV", "doses": [{"dose": 4, "min_age": "1m", "max_age": "3m", "min_interval": "29d"}]},
             {"id": "C", "vaccine": "PENTA", "doses": [
                 {"dose": 1, "min_age": "1m"}, {"dose": 2, "min_age": "4w", "min_interval": "1m"}]},
             # the same durations as C in other places: only the vaccine tells the two apart
             {"id": "D", "vaccine": "PCV", "doses": [
                 {"dose": 1, "min_age": "4w"}, {"dose": 2, "min_age": "1m", "min_interval": "1m"}]}]}


def _fresh(document: dict) -> engine.Schedule:
    return engine.parse(document, VACCINES)  # a new parsed schedule: a new, empty memo


def _engine(schedule, birth, sex, doses, as_of):
    return engine.evaluate(schedule, birth, sex, doses, as_of, forecast=False).recorded


def _random_case(rng: random.Random, vaccines, numbers, max_age: int):
    birth = date(rng.choice((2023, 2024)), rng.randint(1, 3), 1) + timedelta(days=rng.choice((0, 27, 28, 29, 30)))
    doses = []
    for _ in range(rng.randint(1, 5)):
        number = rng.choice(numbers)
        doses.append(engine.Dose(rng.choice(vaccines), number, birth + timedelta(days=rng.randint(0, max_age)),
                                 rng.choice(("completed",) * 6 + ("entered-in-error",))))
    return birth, doses


_births = st.dates(date(2023, 1, 1), date(2026, 6, 30))


@st.composite
def _history(draw, vaccines, numbers, max_age):
    birth = draw(_births)
    doses = draw(st.lists(st.builds(
        engine.Dose, st.sampled_from(vaccines), st.sampled_from(numbers),
        st.integers(0, max_age).map(lambda n: birth + timedelta(days=n)),
        st.sampled_from(("completed", "completed", "completed", "superseded"))), max_size=12))  # > MAX_DATES too
    return birth, draw(st.sampled_from((None, "female", "male"))), doses


SERVICE_SCHEDULE, TIGHT_SCHEDULE = _fresh(SERVICE), _fresh(TIGHT)


@settings(max_examples=400, deadline=None)
@given(case=_history(("OPV", "PENTA", "IPV", "MR", "ROTA", "HEPB", "BCG", "TD", "YF"), (None, None, 0, 1, 2, 3, 4), 1900))
def test_the_memo_judges_as_the_engine_under_the_schedule_in_service(case):
    birth, sex, doses = case
    as_of = birth + timedelta(days=2000)
    assert memo.evaluate(SERVICE_SCHEDULE, birth, doses) == _engine(SERVICE_SCHEDULE, birth, sex, doses, as_of)


@settings(max_examples=400, deadline=None)
@given(case=_history(("OPV", "PENTA", "PCV"), (None, None, 1, 2, 3, 4), 120))
def test_the_memo_judges_as_the_engine_when_month_and_week_cuts_interleave(case):
    birth, sex, doses = case
    assert memo.evaluate(TIGHT_SCHEDULE, birth, doses) == _engine(TIGHT_SCHEDULE, birth, sex, doses, birth)


def test_the_memo_is_used_and_hits_across_children():
    schedule, rng = _fresh(TIGHT), random.Random(5)
    for _ in range(2000):
        birth, doses = _random_case(rng, ("OPV", "PENTA"), (None, 1, 2, 3, 4), 120)
        assert memo.evaluate(schedule, birth, doses) == _engine(schedule, birth, None, doses, birth)
    m = memo.memo_of(schedule)
    assert m.hits > 500 and m.misses > 50


def _drop(part: str):
    def key(self, vaccine, birth, doses):
        vaccine_, order, shape, gaps = real(self, vaccine, birth, doses)
        if part == "vaccine":
            vaccine_ = None
        elif part == "age order":
            order = None
        elif part in ("dose number", "age band", "date rank"):
            n = ("dose number", "age band", "date rank").index(part)
            shape = tuple(tuple(None if i == n else x for i, x in enumerate(s)) for s in shape)
        elif part == "gap order":
            gaps = tuple(g for g in gaps if not isinstance(g, tuple))
        elif part == "gap band":
            gaps = tuple(g if isinstance(g, tuple) else None for g in gaps)
        return vaccine_, order, shape, gaps

    real = memo.Memo.key
    return key


@pytest.mark.parametrize("part", ["vaccine", "age order", "dose number", "age band", "date rank", "gap order", "gap band"])
def test_dropping_any_part_of_the_key_makes_the_memo_wrong(monkeypatch, part):
    monkeypatch.setattr(memo.Memo, "key", _drop(part))
    schedule, rng = _fresh(TIGHT), random.Random(11)
    for _ in range(20000):
        birth, doses = _random_case(rng, ("OPV", "PENTA"), (None, 1, 2, 3, 4), 120)
        if part.startswith("gap"):  # two doses of one series a month apart: the interval decides
            birth = date(2022, 11, 1) + timedelta(days=rng.randint(0, 540))
            first = birth + timedelta(days=rng.randint(28, 40))
            doses = [engine.Dose("OPV", 1, first), engine.Dose("OPV", 2, first + timedelta(days=rng.randint(26, 32)))]
        if part == "vaccine":  # one vaccine a call, as `judge` makes them, for the key to be shared
            doses = [engine.Dose(rng.choice(("PCV", "PENTA")), rng.choice((1, 2)), birth + timedelta(days=rng.randint(25, 35)))]
        if memo.memo_of(schedule).evaluate(doses[0].vaccine, birth, [d for d in doses if d.vaccine == doses[0].vaccine]) \
                != [r for r in _engine(schedule, birth, None, [d for d in doses if d.vaccine == doses[0].vaccine], birth)]:
            return
    pytest.fail(f"a key without its {part} was never wrong")


def test_a_new_schedule_row_starts_with_an_empty_memo_and_the_memo_is_bounded(monkeypatch):
    old, new = _fresh(TIGHT), _fresh(TIGHT | {"version": "2", "series": [
        {"id": "A", "vaccine": "OPV", "doses": [{"dose": 1, "min_age": "8w"}]}]})
    birth, doses = date(2024, 1, 31), [engine.Dose("OPV", 1, date(2024, 3, 15))]
    assert memo.evaluate(old, birth, doses)[0].status == engine.VALID
    assert memo.evaluate(new, birth, doses)[0].status == engine.INVALID  # not the old schedule's remembered answer
    assert memo.memo_of(old) is not memo.memo_of(new) and memo.memo_of(old) is memo.memo_of(old)
    monkeypatch.setattr(memo, "MAX_ENTRIES", 50)
    monkeypatch.setattr(memo, "MAX_CUTS", 40)
    schedule, rng = _fresh(TIGHT), random.Random(3)
    for _ in range(500):
        memo.evaluate(schedule, *_random_case(rng, ("OPV", "PENTA"), (None, 1, 2, 3, 4), 120))
    m = memo.memo_of(schedule)
    assert len(m._results) <= 50 and all(len(r.by_start) <= 40 for r in m._rules.values())


def _engine_last(schedule, birth, doses):
    """What `validation.judge` read of the engine: the result of the last dose identical to the last one."""
    mine = doses[-1]
    r = [r for r in _engine(schedule, birth, None, doses, birth)
         if (r.vaccine, r.dose_number, r.date_given) == (mine.vaccine, mine.dose_number, mine.date_given)][-1]
    return r.status, r.reason, r.series, r.counted_as


@settings(max_examples=300, deadline=None)
@given(case=_history(("OPV", "IPV", "PENTA", "PCV"), (None, None, 0, 1, 2, 3, 4), 900), tight=st.booleans())
def test_the_last_dose_judged_as_validation_judge_reads_the_engine(case, tight):
    birth, _, doses = case
    schedule = TIGHT_SCHEDULE if tight else SERVICE_SCHEDULE
    mine = [d for d in doses if d.vaccine == "OPV" and d.status == "completed"]
    if mine:
        assert memo.memo_of(schedule).last("OPV", birth, mine) == _engine_last(schedule, birth, mine)
