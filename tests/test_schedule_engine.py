"""The schedule engine against worked cases written from the schedule rules (DESIGN.md section
5, registry/schedules/data/pk-epi-2026.json), and properties that must hold for any history."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry.immunizations.vaccines import VACCINES
from registry.schedules import engine as e

DEFAULT_FILE = Path(e.__file__).parent / "data" / "pk-epi-2026.json"
SCHEDULE = e.parse(json.loads(DEFAULT_FILE.read_text()), VACCINES)
BIRTH = date(2026, 1, 1)


def d(days: int) -> date:
    return BIRTH + timedelta(days=days)


def run(doses, as_of, sex="female", birth=BIRTH):
    return e.evaluate(SCHEDULE, birth, sex, [(v, n, when, s) for v, n, when, *rest in doses for s in [rest[0] if rest else "completed"]], as_of)


def recorded(ev, vaccine, n):
    [r] = [r for r in ev.recorded if (r.vaccine, r.dose_number) == (vaccine, n)]
    return r.status, r.reason


def forecast(ev, vaccine, n):
    [f] = [f for f in ev.forecast if (f.vaccine, f.dose_number) == (vaccine, n)]
    return f


# (name, doses, as_of days, expected recorded {(vaccine, n): (status, reason)}, expected forecast {(vaccine, n): status})
CASES = [
    ("on time at birth", [("BCG", 1, d(0)), ("OPV", 0, d(0)), ("HEPB", 1, d(0))], 1,
     {("BCG", 1): ("valid", None), ("OPV", 0): ("valid", None), ("HEPB", 1): ("valid", None)}, {("OPV", 1): "not_yet_due"}),
    ("6 weeks on time", [("PENTA", 1, d(42)), ("OPV", 1, d(42)), ("PCV", 1, d(42)), ("ROTA", 1, d(42))], 43,
     {("PENTA", 1): ("valid", None), ("ROTA", 1): ("valid", None)}, {("PENTA", 2): "not_yet_due", ("BCG", 1): "overdue"}),
    ("too early for age: Penta-1 at 5 weeks", [("PENTA", 1, d(35))], 36,
     {("PENTA", 1): ("invalid", "too_early_for_age")}, {("PENTA", 1): "not_yet_due"}),
    ("interval too short: Penta-2 three weeks after Penta-1", [("PENTA", 1, d(60)), ("PENTA", 2, d(80))], 90,
     {("PENTA", 1): ("valid", None), ("PENTA", 2): ("invalid", "interval_too_short")}, {("PENTA", 2): "due"}),
    ("late but valid: Penta-1 at 5 months", [("PENTA", 1, d(150))], 151,
     {("PENTA", 1): ("valid", None)}, {("PENTA", 2): "not_yet_due"}),
    ("missing birth doses: OPV-0 no longer applicable after 14 days, BCG still due/overdue until 1 year", [], 60,
     {}, {("OPV", 0): "not_applicable", ("HEPB", 1): "not_applicable", ("BCG", 1): "overdue"}),
    ("BCG after 1 year: no longer applicable", [], 400, {}, {("BCG", 1): "not_applicable"}),
    ("BCG given after 1 year is invalid", [("BCG", 1, d(400))], 401, {("BCG", 1): ("invalid", "after_maximum_age")}, {}),
    ("OPV-0 given on day 20 is invalid", [("OPV", 0, d(20))], 21, {("OPV", 0): ("invalid", "after_maximum_age")}, {}),
    ("rotavirus past its maximum age", [("ROTA", 1, d(42))], 800, {("ROTA", 1): ("valid", None)}, {("ROTA", 2): "not_applicable"}),
    ("rotavirus given after 24 months is invalid", [("ROTA", 1, d(740))], 741, {("ROTA", 1): ("invalid", "after_maximum_age")}, {}),
    ("MR-2 less than 4 weeks after MR-1", [("MR", 1, d(460)), ("MR", 2, d(470))], 490,
     {("MR", 1): ("valid", None), ("MR", 2): ("invalid", "interval_too_short")}, {("MR", 2): "due"}),
    ("MR-2 before 15 months is too early", [("MR", 1, d(273)), ("MR", 2, d(400))], 401,
     {("MR", 2): ("invalid", "too_early_for_age")}, {("MR", 2): "not_yet_due"}),
    ("duplicate: Penta-1 recorded twice", [("PENTA", 1, d(42)), ("PENTA", 1, d(80))], 81,
     {("PENTA", 1): None}, {}),
    ("voided and superseded doses are ignored", [("BCG", 1, d(0), "entered-in-error"), ("PENTA", 1, d(42), "superseded")], 50,
     {}, {("BCG", 1): "overdue", ("PENTA", 1): "due"}),
    ("IPV-2 at 9 months, at least 4 months after IPV-1", [("IPV", 1, d(200)), ("IPV", 2, d(280))], 281,
     {("IPV", 2): ("invalid", "interval_too_short")}, {("IPV", 2): "not_yet_due"}),
]


@pytest.mark.parametrize("name,doses,as_of,want_recorded,want_forecast", CASES, ids=[c[0] for c in CASES])
def test_worked_cases(name, doses, as_of, want_recorded, want_forecast):
    ev = run(doses, d(as_of))
    for key, want in want_recorded.items():
        if want is None:
            continue
        assert recorded(ev, *key) == want, key
    for key, want in want_forecast.items():
        assert forecast(ev, *key).status == want, key


def test_duplicate_does_not_count():
    ev = run([("PENTA", 1, d(42)), ("PENTA", 1, d(80))], d(81))
    assert [(r.status, r.reason) for r in ev.recorded] == [("valid", None), ("invalid", "duplicate")]
    assert forecast(ev, "PENTA", 2).earliest == d(70)


def test_interrupted_series_resumes_from_the_last_valid_dose():
    """Penta-1 at 6 weeks, then nothing until 8 months: Penta-2 is overdue (due from dose 1 + 4
    weeks), not restarted; once given late, Penta-3 is due 4 weeks after it."""
    ev = run([("PENTA", 1, d(42))], d(240))
    f = forecast(ev, "PENTA", 2)
    assert (f.status, f.earliest) == ("overdue", d(70))
    assert forecast(ev, "PENTA", 3).earliest == d(240 + 28)  # not before the dose it depends on
    ev = run([("PENTA", 1, d(42)), ("PENTA", 2, d(245))], d(246))
    assert recorded(ev, "PENTA", 2) == ("valid", None)
    assert not any(f.vaccine == "PENTA" and f.dose_number == 1 for f in ev.forecast)
    f = forecast(ev, "PENTA", 3)
    assert (f.status, f.earliest, f.recommended) == ("not_yet_due", d(245 + 28), d(245 + 28))


def test_an_invalid_dose_does_not_count_and_the_slot_stays_open():
    ev = run([("PENTA", 1, d(30)), ("PENTA", 2, d(60))], d(61))
    assert recorded(ev, "PENTA", 1) == ("invalid", "too_early_for_age")
    # Penta-2 at 60 days is before the 10-week minimum age for slot 2, but it fills slot 1 (6 weeks)
    [r] = [r for r in ev.recorded if r.dose_number == 2]
    assert (r.status, r.counted_as) == ("valid", 1)
    assert forecast(ev, "PENTA", 2).earliest == d(88)


def test_td_series_is_for_women_only():
    boy = run([], d(10), sex="male")
    assert not any(f.vaccine == "TD" for f in boy.forecast)
    woman = run([("TD", 1, date(2046, 1, 1))], date(2046, 1, 10), birth=date(2000, 1, 1))
    assert recorded(woman, "TD", 1) == ("valid", None)
    assert forecast(woman, "TD", 2).earliest == date(2046, 1, 29)


def test_not_in_schedule_is_reported_not_counted():
    ev = run([("OPV", 4, d(300))], d(301))
    assert recorded(ev, "OPV", 4) == ("not_in_schedule", None)


def test_calendar_months():
    assert e.add(date(2026, 1, 31), "1m") == date(2026, 2, 28)
    assert e.add(date(2024, 2, 29), "1y") == date(2025, 2, 28)
    with pytest.raises(e.ScheduleError):
        e.add(BIRTH, "6 weeks")


def test_a_malformed_schedule_is_refused():
    doc = json.loads(DEFAULT_FILE.read_text())
    doc["series"][0]["vaccine"] = "XYZ"
    with pytest.raises(e.ScheduleError):
        e.parse(doc, VACCINES)
    with pytest.raises(e.ScheduleError):
        e.parse({"schema_version": 1}, VACCINES)


_pairs = sorted((x.vaccine, x.dose) for s in SCHEDULE.series for x in s.slots) + [("OPV", 4)]
doses_st = st.lists(st.tuples(st.sampled_from(_pairs), st.integers(-5, 6000),
                              st.sampled_from(["completed", "completed", "entered-in-error", "superseded"])), max_size=25)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(birth=st.dates(date(1970, 1, 1), date(2030, 12, 31)), sex=st.sampled_from(["female", "male", "other"]),
       raw=doses_st, as_of_days=st.integers(0, 20000))
def test_properties(birth, sex, raw, as_of_days):
    doses = [(v, n, birth + timedelta(days=max(0, off)), status) for (v, n), off, status in raw]
    as_of = birth + timedelta(days=as_of_days)
    ev = e.evaluate(SCHEDULE, birth, sex, doses, as_of)
    counted = {(r.series, r.counted_as) for r in ev.recorded if r.status == "valid"}
    for f in ev.forecast:
        # no dose is ever both complete and overdue (or due)
        assert (f.series, f.dose_number) not in counted
        # due dates never precede the birth date; recommended within [earliest, latest]
        assert birth <= f.earliest <= f.recommended <= f.latest
    assert len(ev.recorded) == sum(1 for *_, s in doses if s == "completed")
    # deterministic, whatever the order the doses come in
    again = e.evaluate(SCHEDULE, birth, sex, list(reversed(doses)), as_of)
    assert (again.recorded, again.forecast) == (ev.recorded, ev.forecast)
