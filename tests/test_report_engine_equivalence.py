"""The maintained aggregates judge every child exactly as the schedule engine does.

Property: for random dose histories (early, late, repeated, out of order, voided, corrected,
overridden, off-schedule doses; children born on month ends, where calendar-month ages clamp),
the aggregate counts per union council, birth month and antigen-dose equal the engine's
verdicts summed over the children, whether the aggregates were folded in by the refresher or
rebuilt. The oracle calls `registry.schedules.engine.evaluate` directly, not the reports code."""

from __future__ import annotations

import copy
from datetime import date, timedelta
from unittest import mock

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from registry.immunizations.models import Immunization
from registry.immunizations.vaccines import VACCINES, first_dose
from registry.patients.models import Patient
from registry.reports import aggregate
from registry.reports import catalogue as cat
from registry.reports import statements as sql
from registry.reports.models import CoverageCount
from registry.schedules import engine
from registry.schedules import service as schedules
from tests.report_population import PROVINCE, Place

AS_OF = date(2026, 11, 22)
AGES = [0, 1, 10, 14, 15, 30, 41, 42, 43, 45, 60, 69, 70, 71, 77, 97, 98, 99, 120, 180, 270, 273, 276, 300, 364, 365,
        450, 456, 500, 730, 731, 900]
_VACCINES = ["PENTA", "PENTA", "OPV", "OPV", "PCV", "ROTA", "IPV", "MR", "BCG", "HEPB", "TCV", "TD"]

dose_st = st.tuples(
    st.sampled_from(_VACCINES),
    st.integers(0, 5),
    st.one_of(st.sampled_from(AGES), st.integers(0, 1000)),
    st.sampled_from(["completed"] * 6 + ["entered-in-error", "corrected", "overridden"]),
)
child_st = st.tuples(
    st.one_of(st.sampled_from([date(2023, 1, 31), date(2023, 5, 31), date(2024, 2, 29), date(2023, 8, 31)]),
              st.dates(date(2022, 1, 1), date(2025, 6, 30))),
    st.integers(0, 2),
    st.sampled_from(["female", "male"]),
    st.lists(dose_st, max_size=10),
)


def _oracle(schedule, kids, place) -> dict:
    """Engine verdicts summed per (leaf, cohort month, item): {key: (any, valid)}."""
    out: dict[tuple, list[int]] = {}
    for birth, uc, sex, doses in kids:
        leaf, month = place.ucs[uc], birth.year * 100 + birth.month
        seen = [(v, n, d) for v, n, d, status in doses if status == "completed"]
        valid = {f"{r.vaccine}-{r.counted_as}" for r in engine.evaluate(
            schedule, birth, sex, [engine.Dose(v, n, d) for v, n, d in seen], AS_OF).recorded if r.status == engine.VALID}
        recorded = {f"{v}-{n}" for v, n, _ in seen}
        p1 = int(any(f"{v}-{n}" == cat.ZERO_DOSE_ITEM and d < engine.add(birth, cat.ZERO_DOSE_AGE) for v, n, d in seen))
        cell = out.setdefault((leaf, month, cat.CHILDREN), [0, 0])
        cell[0] += 1
        cell[1] += p1
        for item in cat.ITEMS:
            if item in recorded or item in valid:
                cell = out.setdefault((leaf, month, item), [0, 0])
                cell[0] += 1
                cell[1] += int(item in valid)
    return {k: tuple(v) for k, v in out.items()}


def _stored(rt, place) -> dict:
    t = CoverageCount.__table__
    with rt.sessions() as s:
        rows = s.execute(select(t.c.leaf, t.c.cohort_month, t.c.item, t.c.any_count, t.c.valid_count)
                         .where(t.c.leaf.in_(place.ucs))).all()
    return {(r.leaf, r.cohort_month, r.item): (r.any_count, r.valid_count) for r in rows}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(kids=st.lists(child_st, min_size=1, max_size=6), rebuild=st.booleans())
def test_aggregates_equal_the_engine_summed_over_children(runtime, kids, rebuild):
    with runtime.sessions() as s:
        row = schedules.in_force(s, PROVINCE, AS_OF)
        schedule = engine.parse(schedules.document(s, row.id), VACCINES)
    _check_property(runtime, kids, rebuild, schedule)


def _provincial_variant(document: dict) -> dict:
    """Another province's schedule: Penta from 8 weeks, 6 weeks apart, Rota up to 12 months with
    no minimum interval."""
    doc = copy.deepcopy(document)
    doc["version"] = "variant"
    for series in doc["series"]:
        for dose in series["doses"]:
            if series["vaccine"] == "PENTA":
                dose["min_age"] = "8w" if dose["dose"] == 1 else dose["min_age"]
                if dose.get("min_interval"):
                    dose["min_interval"] = "6w"
            if series["vaccine"] == "ROTA":
                dose["max_age"] = "12m"
                dose.pop("min_interval", None)  # no interval: only the same-day rule stops a second dose
    return doc


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(kids=st.lists(child_st, min_size=1, max_size=5), rebuild=st.booleans())
@example(kids=[(date(2024, 1, 10), 0, "female", [("PENTA", 1, 45, "completed"), ("PENTA", 2, 80, "completed")])], rebuild=False)
@example(kids=[(date(2024, 1, 10), 1, "male", [("PENTA", 1, 45, "completed"), ("ROTA", 1, 400, "completed")])], rebuild=True)
@example(kids=[(date(2024, 1, 10), 2, "male", [("ROTA", 2, 80, "completed"), ("ROTA", 1, 80, "completed")])], rebuild=False)
def test_each_schedule_group_is_judged_by_its_own_schedule(runtime, kids, rebuild):
    """Two schedule groups judged in one pass: the place's province under a provincial variant,
    the rest under the national schedule; counts equal the engine under the variant."""
    with runtime.sessions() as s:
        row = schedules.in_force(s, PROVINCE, AS_OF)
        national = engine.parse(schedules.document(s, row.id), VACCINES)
        variant = engine.parse(_provincial_variant(schedules.document(s, row.id)), VACCINES)
    real = aggregate._schedule_groups

    def split(session, as_of):
        (group,) = real(session, as_of)
        others = tuple(c for c in group.custodians if c != PROVINCE)
        return [sql.Group(cat.rules(national), others, national), sql.Group(cat.rules(variant), (PROVINCE,), variant)]

    with mock.patch.object(aggregate, "_schedule_groups", split):
        _check_property(runtime, kids, rebuild, variant)


def _check_property(runtime, kids, rebuild, schedule):
    place = Place(runtime)
    stored_kids = []
    with runtime.sessions.begin() as s:
        for birth, uc, sex, doses in kids:
            pid = place.child(s, birth, uc=uc, mark=True)
            s.execute(update(Patient.__table__).where(Patient.__table__.c.id == pid).values(sex=sex))
            kept = []
            for vaccine, number, age, status in doses:
                number = min(max(number, first_dose(vaccine)), VACCINES[vaccine]["max_dose"] + 1)
                given_on = birth + timedelta(days=age)
                if status == "corrected":  # the old record superseded, a corrected one (a week later) completed
                    old = place.dose(s, pid, vaccine, number, given_on, "superseded", uc=uc)
                    new = place.dose(s, pid, vaccine, number, given_on + timedelta(days=7), uc=uc)
                    s.execute(update(Immunization.__table__).where(Immunization.__table__.c.id == new).values(supersedes_id=old))
                    kept += [(vaccine, number, given_on, "superseded"), (vaccine, number, given_on + timedelta(days=7), "completed")]
                elif status == "overridden":  # recorded against a rule with an override: counted like any other
                    did = place.dose(s, pid, vaccine, number, given_on, uc=uc)
                    s.execute(update(Immunization.__table__).where(Immunization.__table__.c.id == did)
                              .values(override_rule=engine.TOO_EARLY))
                    kept.append((vaccine, number, given_on, "completed"))
                else:
                    place.dose(s, pid, vaccine, number, given_on, status, uc=uc)
                    kept.append((vaccine, number, given_on, status))
            stored_kids.append((birth, uc, sex, kept))
    with runtime.sessions.begin() as s:
        if rebuild:
            aggregate.rebuild(s, AS_OF)
        else:
            while aggregate.refresh(s, AS_OF, 1000):
                pass
    assert _stored(runtime, place) == _oracle(schedule, stored_kids, place)


def test_invalid_then_valid_doses_are_counted_as_the_engine_fills_slots(runtime):
    """The case that was undercounted: Penta-1 too early, then doses recorded as 2 and 3 on time.
    The engine counts them as Penta-1 and Penta-2; the aggregates must say the same."""
    place = Place(runtime)
    b = date(2024, 1, 10)
    with runtime.sessions.begin() as s:
        place.child(s, b, mark=True, doses=[("PENTA", 1, b + timedelta(days=20)), ("PENTA", 2, b + timedelta(days=50)),
                                            ("PENTA", 3, b + timedelta(days=80))])
    with runtime.sessions.begin() as s:
        aggregate.refresh(s, AS_OF, 1000)
    month = 202401
    got = _stored(runtime, place)
    assert got[(place.ucs[0], month, "PENTA-1")] == (1, 1)
    assert got[(place.ucs[0], month, "PENTA-2")] == (1, 1)
    assert got[(place.ucs[0], month, "PENTA-3")] == (1, 0)


def test_calendar_month_ages_clamp_on_both_databases(runtime):
    """Born 31 May 2023: nine months is 29 Feb 2024 for the engine (SQLite's date() would say
    2 March). MR-1 on 29 Feb 2024 is valid."""
    place = Place(runtime)
    b = date(2023, 5, 31)
    with runtime.sessions.begin() as s:
        place.child(s, b, mark=True, doses=[("MR", 1, date(2024, 2, 29))])
    with runtime.sessions.begin() as s:
        aggregate.refresh(s, AS_OF, 1000)
    assert _stored(runtime, place)[(place.ucs[0], 202305, "MR-1")] == (1, 1)
