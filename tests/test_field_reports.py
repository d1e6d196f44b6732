"""Field-work reports (issue 12, items 4-5) over HTTP and the CLI: refusals and missed
opportunities per union council and cohort, data quality for a period; scope (404 outside it),
one audit event per request, suppression (no released cell under the threshold, no additive
group with a single hidden cell), a refusal never counted as a dose by the coverage aggregates.
Populations are hand-built in a tehsil of their own (tests/report_population.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import insert, select, update

from conftest import audit_events
from registry.clock import local_today
from registry.immunizations.models import Immunization
from registry.patients import codec
from registry.linkage.models import LinkCandidate
from registry.patients.models import Patient
from registry.reports import quality
from registry.reports.models import ChildStatus
from tests.report_population import DISTRICT, LOADER, PROVINCE, Place

COHORT = "2023"
T = Immunization.__table__


@pytest.fixture(scope="module")
def place(runtime):
    """UC0: 6 children refusing on religious grounds; UC1: 5 refusing for safety and 2 with a
    stock-out; UC2: 2 absent. One more refusal in UC0, voided: it no longer counts."""
    p = Place(runtime)
    p.refusing = []
    with runtime.sessions.begin() as s:
        plan = [(0, "refusal-religious")] * 6 + [(1, "refusal-safety")] * 5 + [(1, "stock-out")] * 2 + [(2, "child-absent")] * 2
        for k, (uc, reason) in enumerate(plan):
            birth = date(2023, 3, 1) + timedelta(days=k)
            pid = p.child(s, birth, uc=uc, mark=True)
            did = p.dose(s, pid, "PENTA", 1, birth + timedelta(days=50), status="not-done", uc=uc)
            s.execute(update(T).where(T.c.id == did).values(not_done_reason=reason))
            if reason.startswith("refusal"):
                p.refusing.append(pid)
        pid = p.child(s, date(2023, 4, 1), uc=0, mark=True)
        did = p.dose(s, pid, "PENTA", 1, date(2023, 5, 20), status="entered-in-error", uc=0)
        s.execute(update(T).where(T.c.id == did).values(not_done_reason="refusal-religious"))
    return p


def _get(world, who, path, **params):
    return world.client.get(f"/api/v1/reports/{path}", params=params, headers=world.h(who))


def _cells(body, pick) -> list[tuple[str, int | None]]:
    return [(row["code"], pick(row)) for row in body["rows"]]


def _assert_suppressed(body, pick, threshold=5):
    cells = _cells(body, pick) + [("_total", pick(body["total"]))]
    assert all(v is None or v >= threshold for _, v in cells)
    assert sum(v is None for _, v in cells) != 1  # never one unknown in an additive group


def test_refusals_per_union_council_suppressed_and_audited(shared_world, place, runtime):
    r = _get(shared_world, "official_district", "refusals", jurisdiction=place.tehsil, cohort=COHORT)
    assert r.status_code == 200, r.json()
    body = r.json()
    assert {row["code"] for row in body["rows"]} == set(place.ucs)
    rows = {row["code"]: row for row in body["rows"]}
    assert rows[place.ucs[0]]["groups"]["refusal"] == 6  # the voided refusal is not counted
    assert body["total"]["groups"]["refusal"] == 11
    assert rows[place.ucs[2]]["groups"]["refusal"] is None and rows[place.ucs[2]]["children_not_vaccinated"] is None
    assert body["total"]["children_not_vaccinated"] == 15 and body["total"]["children"] == 16
    for group in body["groups"]:
        _assert_suppressed(body, lambda row, g=group: row["groups"][g])
    _assert_suppressed(body, lambda row: row["children_not_vaccinated"])
    _assert_suppressed(body, lambda row: row["children"])
    assert body["total"]["refusal_pct"] == round(100 * 11 / 16, 1)
    [ev] = [e for e in audit_events(runtime, request_id=r.headers["X-Request-ID"])]
    assert (ev.action, ev.outcome, ev.resource_id, ev.patient_id) == ("report.refusals", "success", place.tehsil, None)
    assert ev.detail["cohort"] == COHORT


def test_a_refusal_never_counts_in_the_coverage_aggregates(shared_world, place, runtime):
    r = _get(shared_world, "official_district", "coverage", jurisdiction=place.tehsil, cohort=COHORT)
    assert r.status_code == 200
    with runtime.sessions() as s:
        masks = s.execute(select(ChildStatus.any_mask, ChildStatus.valid_mask)
                          .where(ChildStatus.patient_id.in_(place.refusing))).all()
    assert len(masks) == len(place.refusing) and all(m == (0, 0) for m in masks)


def test_refusals_scope_and_bad_input(shared_world, place, runtime):
    r = _get(shared_world, "official_other_district", "refusals", jurisdiction=place.tehsil, cohort=COHORT)
    assert r.status_code == 404
    [ev] = audit_events(runtime, request_id=r.headers["X-Request-ID"])
    assert (ev.action, ev.outcome) == ("report.refusals", "denied")
    r = _get(shared_world, "official_district", "refusals", jurisdiction=place.tehsil, cohort="20x3-secret")
    assert r.status_code == 422 and "secret" not in r.text
    assert {e["field"] for e in r.json()["errors"]} == {"cohort"}


@pytest.fixture(scope="module")
def quality_place(runtime):
    """At UC0's facility: 10 children registered today (6 with a phone); 18 doses given in the
    period, 12 of them 3 days ago and 6 forty days ago, all recorded today; 6 with a lot number;
    5 recorded against `too_early_for_age`; 5 with an unknown vaccine code; one voided dose and
    one given before the period, neither counted."""
    p = Place(runtime)
    today = local_today()
    now = datetime.now(UTC)
    with runtime.sessions.begin() as s:
        pids = []
        for k in range(10):
            pid = uuid.uuid4()
            plain = {"given_name": "Synthetic", "health_id": f"Q{uuid.uuid4().hex[:10]}",
                     "phone": "+923001234567" if k < 6 else None}
            s.execute(insert(Patient.__table__), [{
                "id": pid, "version": 1, "custodian": PROVINCE, "province": PROVINCE, "district": DISTRICT,
                "home_facility": p.facilities[0], "sex": "male", "birth_date": today - timedelta(days=60),
                "guardian_relationship": None, "created_at": now, "updated_at": now, "created_by": LOADER,
                **codec.encrypt_fields(runtime.cipher, PROVINCE, pid, {c: plain.get(c) for c in codec.ENCRYPTED})}])
            pids.append(pid)

        def dose(k, given, *, lot=None, rule=None, vaccine="OPV", status="completed"):
            s.execute(insert(T), [{
                "id": uuid.uuid4(), "version": 1, "patient_id": pids[k % 10], "custodian": PROVINCE, "province": PROVINCE,
                "district": DISTRICT, "facility": p.facilities[0], "vaccine": vaccine, "dose_number": 1, "date_given": given,
                "lot_number": lot, "performer_id": LOADER, "status": status, "status_reason_ct": None, "supersedes_id": None,
                "recorded_at": now, "override_rule": rule, "updated_at": now}])

        for k in range(12):
            dose(k, today - timedelta(days=3), lot="L-1" if k < 6 else None, rule="too_early_for_age" if k < 5 else None,
                 vaccine="UNKNOWN" if 5 <= k < 10 else "OPV")
        for k in range(6):
            dose(k, today - timedelta(days=40))
        dose(0, today - timedelta(days=3), status="entered-in-error")
        dose(1, today - timedelta(days=90))
        # record linkage (issue 13): 3 open pairs (6 records) and 3 decided ones (5 records, record 0 in both states)
        for a, b, status in ((0, 1, "open"), (2, 3, "unsure"), (4, 5, "open"),
                             (6, 7, "merged"), (8, 9, "not_same"), (0, 9, "not_same")):
            left, right = sorted((pids[a], pids[b]), key=str)
            s.execute(insert(LinkCandidate.__table__), [{
                "id": uuid.uuid4(), "version": 1, "left_id": left, "right_id": right, "match_weight": 7.0,
                "match_probability": 0.99, "grade": "probable", "levels": {"birth_date": 3}, "model_version": "test",
                "source": "dedupe", "status": status, "created_at": now}])
    return p


def test_data_quality_of_a_facility(shared_world, quality_place, runtime):
    today = local_today()
    uc = quality_place.ucs[0]
    r = _get(shared_world, "official_district", "data-quality", jurisdiction=uc,
             **{"from": (today - timedelta(days=60)).isoformat(), "to": today.isoformat()})
    assert r.status_code == 200, r.json()
    body = r.json()
    assert body["rows_are"] == "facilities" and [row["code"] for row in body["rows"]] == [quality_place.facilities[0]]
    row = body["rows"][0]
    c = row["completeness"]
    assert (c["patients_registered"], c["phone_pct"], c["bform_pct"]) == (10, 60.0, None)  # 0 B-forms: a small cell
    assert (c["doses"], c["lot_number_pct"]) == (18, 33.3)
    t = row["timeliness"]
    assert (t["doses_timed"], t["median_days"], t["within_7_days_pct"], t["within_30_days_pct"]) == (18, 3, 66.7, 66.7)
    assert row["consistency"]["invalid_by_rule"] == {"too_early_for_age": {"count": 5, "pct": 27.8}}
    assert row["unknown_vaccine_codes"] == {"count": 5, "pct": 27.8}
    assert row["suspected_duplicates"] == {"records_open": 6, "records_resolved": 5}
    assert ("provenance" in row) == quality.has_provenance() == body["provenance_available"] is True
    assert row["provenance"]["reported"] is None  # 0 reported doses: a small cell, suppressed
    [ev] = audit_events(runtime, request_id=r.headers["X-Request-ID"])
    assert (ev.action, ev.outcome, ev.resource_id) == ("report.data_quality", "success", uc)


def test_data_quality_by_union_council_is_suppressed(shared_world, quality_place):
    today = local_today()
    r = _get(shared_world, "official_province", "data-quality", jurisdiction=quality_place.tehsil,
             **{"from": (today - timedelta(days=60)).isoformat(), "to": today.isoformat()})
    assert r.status_code == 200, r.json()
    body = r.json()
    assert body["rows_are"] == "jurisdictions" and {row["code"] for row in body["rows"]} == set(quality_place.ucs)
    _assert_suppressed(body, lambda row: row["completeness"]["doses"])
    _assert_suppressed(body, lambda row: row["completeness"]["patients_registered"])
    doses = dict(_cells(body, lambda row: row["completeness"]["doses"]))
    ucs = quality_place.ucs
    assert (doses[ucs[0]], doses[ucs[1]], doses[ucs[2]]) == (18, None, None)  # two zeros hidden: no complement needed
    assert body["total"]["completeness"]["doses"] == 18


def test_data_quality_scope_and_bad_input(shared_world, quality_place, runtime):
    uc = quality_place.ucs[0]
    r = _get(shared_world, "official_other_province", "data-quality", jurisdiction=uc, **{"from": "2026-01-01", "to": "2026-01-31"})
    assert r.status_code == 404
    for params, field in (({"to": "2026-01-31"}, "from"), ({"from": "2026-01-01"}, "to"),
                          ({"from": "2026-02-01", "to": "2026-01-01"}, "to"), ({"from": "2024-01-01", "to": "2026-01-01"}, "to"),
                          ({"from": "secret-7731", "to": "2026-01-01"}, "from")):
        r = _get(shared_world, "official_district", "data-quality", jurisdiction=uc, **params)
        assert r.status_code == 422, params
        assert field in {e["field"] for e in r.json()["errors"]} and "secret" not in r.text


def test_data_quality_as_dhis2_data_values(shared_world, quality_place, runtime):
    from registry.reports.models import Dhis2Mapping

    c, h = shared_world.client, shared_world.h("official_province")
    with runtime.sessions() as s:  # the shared database's PK-PB coverage mapping, put back afterwards
        t = Dhis2Mapping.__table__
        before = s.execute(select(t.c.document).where(t.c.jurisdiction_code == "PK-PB")).scalar_one_or_none()
    ucs = quality_place.ucs
    units = {"PK-PB": "ImspTQPwCqd", ucs[0]: "Uc0aaaaaaaa", ucs[1]: "Uc1aaaaaaaa"}
    try:
        r = c.put("/api/v1/reports/dhis2-mapping", json={"jurisdiction": "PK-PB", "data_elements": {"PENTA-1": {"dataElement": "fClA2Erf6IO"}},
                                                       "org_units": units}, headers=h)
        assert r.status_code == 200, r.json()
        elements = {"doses": {"dataElement": "dqDosesxxx1"}, "lot_number_pct": {"dataElement": "dqLotPctxx1"},
                    "reported_pct": {"dataElement": "dqReportdx1"}}
        r = c.put("/api/v1/reports/dhis2-quality-mapping", json={"jurisdiction": "PK-PB", "data_elements": elements}, headers=h)
        assert r.status_code == 200, r.json()
        bad = c.put("/api/v1/reports/dhis2-quality-mapping", json={"jurisdiction": "PK-PB", "data_elements": {"secret-x": {}}}, headers=h)
        assert bad.status_code == 422 and "secret" not in bad.text and bad.json()["errors"][0]["field"] == "data_elements"
        year = (local_today() - timedelta(days=3)).year
        period = {"jurisdiction": quality_place.tehsil, "from": f"{year}-01-01", "to": f"{year}-12-31"}
        r = c.get("/api/v1/reports/data-quality/export", params=period, headers=h)
        assert r.status_code == 200, r.json()
        values = {(v["orgUnit"], v["dataElement"]): v for v in r.json()["dataValues"]}
        report = c.get("/api/v1/reports/data-quality", params=period, headers=h).json()
        rows = {row["code"]: row for row in report["rows"]}
        assert values[("Uc0aaaaaaaa", "dqDosesxxx1")]["value"] == str(rows[ucs[0]]["completeness"]["doses"])
        assert values[("Uc0aaaaaaaa", "dqDosesxxx1")]["period"] == str(year)
        assert ("Uc1aaaaaaaa", "dqDosesxxx1") not in values  # suppressed: never sent
        assert int(r.headers["X-Export-Skipped"]) >= 1
        r = c.get("/api/v1/reports/data-quality/export", params={**period, "to": f"{year}-02-10"}, headers=h)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "from"
    finally:
        with runtime.sessions.begin() as s:
            s.execute(t.delete().where(t.c.jurisdiction_code == "PK-PB"))
            if before is not None:
                s.execute(t.insert().values(jurisdiction_code="PK-PB", document=before, loaded_at=datetime.now(UTC), loaded_by="test"))


def test_units_place_records_like_the_coverage_report():
    from types import SimpleNamespace as N

    from registry.reports.coverage import Tree
    from registry.reports.units import TOTAL, Units, suppress

    rows = [N(code="PK", name="Pakistan", level="country", parent_code=None, province=None, district=None),
            N(code="PK-XX", name="P", level="province", parent_code="PK", province="PK-XX", district=None),
            N(code="PK-XX-D", name="D", level="district", parent_code="PK-XX", province="PK-XX", district="PK-XX-D"),
            N(code="PK-XX-D-T", name="T", level="tehsil", parent_code="PK-XX-D", province="PK-XX", district="PK-XX-D"),
            N(code="PK-XX-D-T-U", name="U", level="union_council", parent_code="PK-XX-D-T", province="PK-XX", district="PK-XX-D")]
    kids: dict = {}
    for r in rows:
        kids.setdefault(r.parent_code, []).append(r.code)
    tree = Tree({r.code: r for r in rows}, kids)
    units = Units(None, tree.nodes["PK-XX-D"], tree)
    assert units.unit_of("PK-XX", "PK-XX-D", "PK-XX-D-T-U", "F1") == "PK-XX-D-T"
    assert units.unit_of("PK-XX", "PK-XX-D", "PK-XX-D", "F2") == "PK-XX-D"  # a facility attached at district level
    assert units.unit_of("PK-XX", "PK-XX-E", "PK-XX-E", "F3") is None
    assert sorted(units.codes) == ["PK-XX-D", "PK-XX-D-T"]
    values, hidden = suppress(sorted(units.codes), {"n": {"PK-XX-D": 7, "PK-XX-D-T": 9}}, 5)
    assert values[TOTAL]["n"] == 16 and not hidden[TOTAL]  # the district's own row counts in the total
