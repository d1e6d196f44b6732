"""Coverage numbers on a hand-built population (valid vs any, cohort month and year, both
denominators), dropout, zero-dose, and incremental maintenance equal to a full rebuild."""

from __future__ import annotations

import random
from datetime import date, timedelta

import pytest
from sqlalchemy import select

from registry.reports import aggregate, coverage, population
from registry.reports.models import CoverageCount
from tests.report_population import Place

AS_OF = date(2026, 11, 22)


@pytest.fixture(scope="module")
def place(runtime):
    p = Place(runtime)
    with runtime.sessions.begin() as s:
        b = date(2024, 3, 10)
        # c1: on time, every dose valid
        p.child(s, b, doses=[("PENTA", 1, b + timedelta(days=42)), ("PENTA", 2, b + timedelta(days=70)),
                             ("PENTA", 3, b + timedelta(days=98)), ("MR", 1, date(2024, 12, 10))])
        # c2: Penta-1 too early (10 days) is invalid; the engine fills the Penta-1 slot with the
        # next valid dose (recorded as Penta-2), so the child has a valid Penta-1 and no valid Penta-2
        p.child(s, b, doses=[("PENTA", 1, b + timedelta(days=10)), ("PENTA", 2, b + timedelta(days=70))])
        # c3: nothing at all
        p.child(s, date(2024, 3, 15))
        # c4 (cohort 2024-07): Penta-1 after the first birthday: valid (up to 5 years), yet zero-dose
        p.child(s, date(2024, 7, 1), doses=[("PENTA", 1, date(2025, 8, 1))])
        # c5: a voided Penta-1 does not count
        p.child(s, b, doses=[("PENTA", 1, b + timedelta(days=45), "entered-in-error")])
        aggregate.rebuild(s, AS_OF)
    return p


def report(rt, place, cohort="2024", denominator="registered", threshold=0, code=None):
    with rt.sessions.begin() as s:
        tree = coverage.Tree.load(s)
        return coverage.build(s, tree.nodes[code or place.tehsil], tree, coverage.parse_cohort(cohort), AS_OF, denominator, threshold)


def test_valid_and_any_dose_coverage_by_union_council(runtime, place):
    r = report(runtime, place)
    uc1, uc2 = r["rows"][0], r["rows"][1]
    assert [row["code"] for row in r["rows"]] == place.ucs
    assert uc1["children"] == 5 and uc2["children"] == 0
    p1, p2, p3, mr1 = (uc1["items"][k] for k in ("PENTA-1", "PENTA-2", "PENTA-3", "MR-1"))
    assert (p1["any"], p1["valid"], p1["any_pct"], p1["valid_pct"]) == (3, 3, 60.0, 60.0)
    assert (p2["any"], p2["valid"]) == (2, 1)
    assert (p3["any"], p3["valid"], mr1["any"], mr1["valid"]) == (1, 1, 1, 1)
    assert r["total"]["children"] == 5 and r["total"]["items"]["PENTA-1"]["any"] == 3
    assert uc2["items"]["PENTA-1"]["any_pct"] is None  # no children: no rate, not a zero


def test_dropout_and_zero_dose(runtime, place):
    row = report(runtime, place)["rows"][0]
    assert row["dropout_pct"] == {"PENTA-1>PENTA-3": 66.7, "PENTA-1>MR-1": 66.7}
    assert row["zero_dose"] == {"eligible_children": 5, "count": 3, "pct": 60.0}  # c3, c4 (late), c5 (voided)
    # a cohort too young to have had a first birthday by as_of has no zero-dose children yet
    young = report(runtime, place, cohort="2026")["total"]["zero_dose"]
    assert young["eligible_children"] == 0 and young["count"] == 0


def test_month_cohort(runtime, place):
    r = report(runtime, place, cohort="2024-03")
    assert r["total"]["children"] == 4
    assert (r["total"]["items"]["PENTA-1"]["any"], r["total"]["items"]["PENTA-1"]["valid"]) == (2, 2)
    assert report(runtime, place, cohort="2024-07")["total"]["children"] == 1


def test_target_population_denominator(runtime, place):
    with runtime.sessions.begin() as s:
        rows = population.parse(f"jurisdiction_code,year,population\n{place.ucs[0]},2024,10\n{place.tehsil},2024,24\n",
                                coverage.Tree.load(s).nodes)
        population.store(s, rows, "test")
    r = report(runtime, place, denominator="target")
    assert r["rows"][0]["denominator"] == 10 and r["rows"][0]["items"]["PENTA-1"]["any_pct"] == 30.0
    assert r["rows"][1]["denominator"] is None and r["rows"][1]["items"]["PENTA-1"]["any_pct"] is None
    assert r["total"]["items"]["PENTA-1"]["valid_pct"] == round(100 * 3 / 24, 1)
    month = report(runtime, place, cohort="2024-03", denominator="target")  # a month is a twelfth of the year
    assert month["total"]["denominator"] == 2.0 and month["total"]["items"]["PENTA-1"]["any_pct"] == 100.0


def test_district_report_rolls_tehsils_up(runtime, place):
    r = report(runtime, place, code="PK-PB-LAH")
    ours = next(row for row in r["rows"] if row["code"] == place.tehsil)
    assert ours["children"] == 5 and ours["items"]["PENTA-1"]["valid"] == 3


@pytest.mark.parametrize("text,needle", [
    ("code,year,population\nPK-PB,2024,1\n", "header"),
    ("jurisdiction_code,year,population\nPK-NOPE,2024,1\n", "line 2: unknown jurisdiction"),
    ("jurisdiction_code,year,population\nPK-PB,20x4,1\n", "line 2: year"),
    ("jurisdiction_code,year,population\nPK-PB,2024,-5\n", "line 2: population"),
    ("jurisdiction_code,year,population\nPK-PB,2024,1\nPK-PB,2024,2\n", "line 3: PK-PB 2024 appears twice"),
    ("jurisdiction_code,year,population\n", "no figures"),
])
def test_population_file_errors_are_clear(runtime, text, needle):
    from registry.errors import InvalidInput

    with runtime.sessions() as s, pytest.raises(InvalidInput) as exc:
        population.parse(text, coverage.Tree.load(s).nodes)
    assert needle in exc.value.message and exc.value.field == "file"


def _counts(rt, leaves):
    t = CoverageCount.__table__
    with rt.sessions() as s:
        rows = s.execute(select(t.c.leaf, t.c.cohort_month, t.c.item, t.c.any_count, t.c.valid_count)
                         .where(t.c.leaf.in_(leaves))).all()
    return sorted(tuple(r) for r in rows)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_incremental_maintenance_equals_full_rebuild(runtime, seed):
    """Random children, doses, voids and moves between union councils, folded in through the
    dirty queue; the counts must equal those of a full rebuild."""
    rng = random.Random(seed)
    p = Place(runtime)
    kids, doses = [], []
    vaccines = [("BCG", 1), ("OPV", 0), ("PENTA", 1), ("PENTA", 2), ("PENTA", 3), ("MR", 1), ("MR", 2), ("ROTA", 1)]
    for step in range(6):
        with runtime.sessions.begin() as s:
            for _ in range(rng.randint(3, 8)):
                birth = date(2023, 1, 1) + timedelta(days=rng.randrange(700))
                kids.append((p.child(s, birth, uc=rng.randrange(3), mark=True), birth))
            for _ in range(rng.randint(5, 20)):
                pid, birth = rng.choice(kids)
                v, n = rng.choice(vaccines)
                doses.append((p.dose(s, pid, v, n, birth + timedelta(days=rng.randrange(0, 500))), pid))
                _mark(s, pid)
            for _ in range(rng.randint(0, 3)):
                did, pid = rng.choice(doses)
                p.void(s, did)
                _mark(s, pid)
            for _ in range(rng.randint(0, 2)):
                pid, _ = rng.choice(kids)
                p.move(s, pid, rng.randrange(3))
                _mark(s, pid)
        with runtime.sessions.begin() as s:
            aggregate.refresh(s, AS_OF, limit=rng.randint(5, 1000) if step < 5 else 100_000)
    with runtime.sessions.begin() as s:
        while aggregate.refresh(s, AS_OF, limit=1000):
            pass
    incremental = _counts(runtime, p.ucs)
    with runtime.sessions.begin() as s:
        aggregate.rebuild(s, AS_OF)
    rebuilt = _counts(runtime, p.ucs)
    assert incremental == rebuilt
    assert sum(r[3] for r in rebuilt if r[2] == "_children") == len(kids)


def _mark(s, pid):
    from registry.reports import queue

    queue.mark(s, pid)


def test_background_refresher_drains_the_queue(runtime):
    from registry.reports import background

    p = Place(runtime)
    with runtime.sessions.begin() as s:
        pid = p.child(s, date(2024, 2, 2), doses=[("BCG", 1, date(2024, 2, 3))], mark=True)
    background.refresh_all(runtime)
    with runtime.sessions() as s:
        assert aggregate.pending(s) == 0
        from registry.reports.models import ChildStatus

        assert s.get(ChildStatus, pid).any_mask & 1 == 1


def test_each_child_is_judged_by_its_custodians_schedule(runtime, monkeypatch):
    """Provinces in two schedule groups: children of a province whose group has no schedule
    count as any-dose only, the others by the rules; the refresher agrees with a rebuild."""
    from registry.reports import statements

    p = Place(runtime)
    b = date(2024, 3, 10)
    with runtime.sessions.begin() as s:
        kid = p.child(s, b, doses=[("PENTA", 1, b + timedelta(days=42)), ("BCG", 1, b + timedelta(days=1))], mark=True)
        aggregate.rebuild(s, AS_OF)
    real = aggregate._schedule_groups

    def split(session, as_of):
        (group,) = real(session, as_of)  # one schedule for the whole country here
        others = tuple(c for c in group.custodians if c != "PK-PB")
        return [statements.Group(group.rules, others, group.schedule), statements.Group({}, ("PK-PB",))]

    def status(s):
        from registry.reports.models import ChildStatus

        row = s.get(ChildStatus, kid)
        return row.any_mask, row.valid_mask

    with runtime.sessions.begin() as s:
        judged = status(s)
        assert judged[0] == judged[1] != 0  # both doses on time: valid under the national schedule
    monkeypatch.setattr(aggregate, "_schedule_groups", split)
    with runtime.sessions.begin() as s:
        aggregate.rebuild(s, AS_OF)
    with runtime.sessions.begin() as s:
        assert status(s) == (judged[0], 0)
    rebuilt = _counts(runtime, p.ucs)
    with runtime.sessions.begin() as s:
        _mark(s, kid)
    with runtime.sessions.begin() as s:
        assert aggregate.refresh(s, AS_OF, 100) == 1
        assert status(s) == (judged[0], 0)
    assert _counts(runtime, p.ucs) == rebuilt
    monkeypatch.undo()
    with runtime.sessions.begin() as s:
        aggregate.rebuild(s, AS_OF)
        assert status(s) == judged


def test_a_change_queued_during_a_rebuild_stays_queued(runtime, monkeypatch):
    """The rebuild empties the queue before it reads the registry: a change queued after that
    point is still queued when it commits, and the next refresh folds it in."""
    p = Place(runtime)
    b = date(2024, 5, 5)
    with runtime.sessions.begin() as s:
        kid = p.child(s, b, mark=True)
    real = aggregate._schedule_groups
    writes = []

    def writer_meanwhile(session, as_of):
        if not writes:
            writes.append(p.dose(session, kid, "BCG", 1, b + timedelta(days=2)))
            _mark(session, kid)
        return real(session, as_of)

    monkeypatch.setattr(aggregate, "_schedule_groups", writer_meanwhile)
    with runtime.sessions.begin() as s:
        aggregate.rebuild(s, AS_OF)
    monkeypatch.undo()
    with runtime.sessions.begin() as s:
        assert aggregate.pending(s) == 1
        assert aggregate.refresh(s, AS_OF, 100) == 1
    incremental = _counts(runtime, p.ucs)
    with runtime.sessions.begin() as s:
        aggregate.rebuild(s, AS_OF)
    assert _counts(runtime, p.ucs) == incremental
    assert ("BCG-1" in {r[2] for r in incremental})
