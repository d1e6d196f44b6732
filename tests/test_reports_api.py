"""Reports over HTTP: scope isolation, one audit event per read, suppression in every format
(JSON, CSV, DHIS2), the SVG chart, loading figures and mappings, nothing decrypted, and the
dirty queue written by the registry's own write paths."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from datetime import date, timedelta

import pytest
from sqlalchemy import select

from registry.reports.models import ChildStatus, DirtyPatient
from registry.users.schemas import UserCreate
from registry.users.service import create_user
from tests.conftest import PASSWORD, audit_events
from tests.report_population import Place

COHORT = "2023"


@pytest.fixture(scope="module")
def place(runtime):
    p = Place(runtime)
    with runtime.sessions.begin() as s:
        for uc, children, with_penta1 in ((0, 6, 2), (1, 10, 9), (2, 7, 7)):
            for k in range(children):
                birth = date(2023, 5, 1) + timedelta(days=k)
                doses = [("PENTA", 1, birth + timedelta(days=45)), ("PENTA", 3, birth + timedelta(days=120))] if k < with_penta1 else []
                p.child(s, birth, uc=uc, doses=doses, mark=True)
    return p


def get(world, who, path, **params):
    return world.client.get(f"/api/v1/reports/{path}", params=params, headers=world.h(who))


def test_official_reads_a_report_with_complementary_suppression(shared_world, place, runtime):
    r = get(shared_world, "official_district", "coverage", jurisdiction=place.tehsil, cohort=COHORT)
    assert r.status_code == 200, r.json()
    body = r.json()
    rows = {row["code"]: row for row in body["rows"]}
    p1 = {code: rows[code]["items"]["PENTA-1"] for code in place.ucs}
    assert p1[place.ucs[0]]["any"] is None and p1[place.ucs[0]]["any_pct"] is None  # 2 children: primary
    assert p1[place.ucs[2]]["any"] is None  # 7: the smallest released cell, suppressed as complement
    assert p1[place.ucs[1]]["any"] == 9 and body["total"]["items"]["PENTA-1"]["any"] == 18
    assert rows[place.ucs[0]]["dropout_pct"]["PENTA-1>PENTA-3"] is None  # derived from a suppressed count
    for name in {c for row in body["rows"] + [body["total"]] for c in row["suppressed"]}:
        hidden = sum(name in row["suppressed"] for row in body["rows"] + [body["total"]])
        assert hidden != 1, name  # no additive group with a single unknown
    assert body["suppression_threshold"] == 5


def test_each_report_read_is_one_aggregate_audit_event(shared_world, place, runtime):
    r = get(shared_world, "official_province", "coverage", jurisdiction=place.tehsil, cohort=COHORT)
    assert r.status_code == 200
    events = audit_events(runtime, request_id=r.headers["X-Request-ID"]) if "X-Request-ID" in r.headers else None
    if events is None:
        events = [e for e in audit_events(runtime, action="report.coverage") if e.actor_username == shared_world.users["official_province"]]
    assert len(events) == 1
    e = events[0]
    assert (e.action, e.outcome, e.resource_type, e.patient_id) == ("report.coverage", "success", "Report", None)
    assert e.detail["jurisdiction"] == place.tehsil and e.detail["cohort"] == COHORT


@pytest.mark.parametrize("who,code", [
    ("official_other_province", "PK-PB-LAH"), ("official_other_district", "PK-PB-LAH"), ("official_province", "PK-SD"),
    ("official_province", "PK"), ("official_other_district", "TEHSIL"), ("official_district", "PK-NOWHERE"),
])
def test_outside_scope_is_not_found_and_audited(shared_world, place, runtime, who, code):
    code = place.tehsil if code == "TEHSIL" else code
    r = get(shared_world, who, "coverage", jurisdiction=code, cohort=COHORT)
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
    mine = [e for e in audit_events(runtime, action="report.coverage") if e.actor_username == shared_world.users[who]]
    assert mine and mine[-1].outcome in ("denied", "not_found")


@pytest.mark.parametrize("who", ["clinic_a", "auditor", "admin"])
def test_other_roles_read_no_report(shared_world, who):
    assert get(shared_world, who, "coverage", cohort=COHORT).status_code == 403


def test_default_jurisdiction_is_the_callers_scope_and_national_sees_all(shared_world):
    r = get(shared_world, "official_district", "coverage", cohort=COHORT)
    assert r.status_code == 200 and r.json()["jurisdiction"]["code"] == "PK-PB-LAH"
    r = get(shared_world, "official_national", "coverage", cohort=COHORT)
    assert r.status_code == 200 and {row["code"] for row in r.json()["rows"]} >= {"PK-PB", "PK-SD"}


def test_reports_never_decrypt(shared_world, place, runtime, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a report decrypted something")

    monkeypatch.setattr(runtime.cipher, "decrypt", refuse)
    for path, extra in (("coverage", {}), ("coverage/export", {"format": "csv"}), ("coverage/chart.svg", {})):
        r = get(shared_world, "official_district", path, jurisdiction=place.tehsil, cohort=COHORT, **extra)
        assert r.status_code == 200, path


def test_csv_export_marks_suppressed_cells(shared_world, place):
    r = get(shared_world, "official_district", "coverage/export", jurisdiction=place.tehsil, cohort=COHORT, format="csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    lines = r.text.splitlines()
    assert lines[0].startswith("jurisdiction_code,jurisdiction_name,cohort")
    uc1 = next(line.split(",") for line in lines if line.startswith(place.ucs[0] + ",") and ",PENTA-1," in line)
    assert uc1[7] == "suppressed" and uc1[9] == "suppressed"
    uc2 = next(line.split(",") for line in lines if line.startswith(place.ucs[1] + ",") and ",PENTA-1," in line)
    assert uc2[7] == "9"


def _mapping(place, province="PK-PB"):
    return {"jurisdiction": province, "measure": "any",
            "data_elements": {"PENTA-1": {"dataElement": "fClA2Erf6IO", "categoryOptionCombo": "HllvX50cXC0"},
                              "PENTA-3": {"dataElement": "n6aMJNLdvep"}},
            "org_units": {place.tehsil: "ImspTQPwCqd", place.ucs[0]: "O6uvpzGd5pu", place.ucs[1]: "fdc6uOvgoji",
                          place.ucs[2]: "lc3eMKXaEfw"}}


def test_dhis2_mapping_and_data_value_set(shared_world, place):
    r = shared_world.client.put("/api/v1/reports/dhis2-mapping", json=_mapping(place), headers=shared_world.h("official_province"))
    assert r.status_code == 200, r.json()
    r = get(shared_world, "official_district", "coverage/export", jurisdiction=place.tehsil, cohort=COHORT, format="dhis2")
    assert r.status_code == 200
    values = r.json()["dataValues"]
    assert values and all(set(v) <= {"dataElement", "period", "orgUnit", "categoryOptionCombo", "value"} for v in values)
    assert all(v["period"] == "2023" and isinstance(v["value"], str) for v in values)
    by = {(v["orgUnit"], v["dataElement"]): v for v in values}
    assert by[("fdc6uOvgoji", "fClA2Erf6IO")]["value"] == "9"
    assert by[("fdc6uOvgoji", "fClA2Erf6IO")]["categoryOptionCombo"] == "HllvX50cXC0"
    assert by[("ImspTQPwCqd", "fClA2Erf6IO")]["value"] == "18"
    assert ("O6uvpzGd5pu", "fClA2Erf6IO") not in by and ("lc3eMKXaEfw", "fClA2Erf6IO") not in by  # suppressed: not sent
    assert int(r.headers["X-Export-Skipped"]) >= 2


@pytest.mark.parametrize("mutate,field", [
    (lambda m: m["data_elements"].update({"PENTA-9": {"dataElement": "fClA2Erf6IO"}}), "data_elements"),
    (lambda m: m["data_elements"]["PENTA-1"].update({"dataElement": "short"}), "data_elements"),
    (lambda m: m["org_units"].update({"PK-SD-KRC": "ImspTQPwCqd"}), "org_units"),
    (lambda m: m.update({"jurisdiction": "PK-PB-LAH"}), "jurisdiction"),
    (lambda m: m["org_units"].update({"PK-PB-LAH": "ImspTQPwCqd"}), "org_units"),  # two places, one org unit
    (lambda m: m["data_elements"].update({"MR-1": {"dataElement": "n6aMJNLdvep"}}), "data_elements"),  # PENTA-3's too
])
def test_bad_mappings_are_refused_with_the_field(shared_world, place, mutate, field):
    m = _mapping(place)
    mutate(m)
    r = shared_world.client.put("/api/v1/reports/dhis2-mapping", json=m, headers=shared_world.h("official_province"))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == field


def test_a_province_cannot_map_another(shared_world, place):
    m = _mapping(place, "PK-SD")
    m["org_units"] = {"PK-SD-KRC": "ImspTQPwCqd"}
    r = shared_world.client.put("/api/v1/reports/dhis2-mapping", json=m, headers=shared_world.h("official_province"))
    assert r.status_code == 404


def test_target_population_upload(shared_world, place):
    h = {**shared_world.h("official_district"), "Content-Type": "text/csv"}
    body = f"jurisdiction_code,year,population\n{place.tehsil},2023,230\n{place.ucs[1]},2023,90\n"
    r = shared_world.client.post("/api/v1/reports/target-populations", content=body, headers=h)
    assert r.status_code == 200 and r.json() == {"loaded": 2}
    r = get(shared_world, "official_district", "coverage", jurisdiction=place.tehsil, cohort=COHORT, denominator="target")
    row = next(x for x in r.json()["rows"] if x["code"] == place.ucs[1])
    assert row["denominator"] == 90 and row["items"]["PENTA-1"]["any_pct"] == 10.0
    bad = shared_world.client.post("/api/v1/reports/target-populations", content="jurisdiction_code,year,population\nPK-PB-LAH,2023,x\n",
                                   headers=h)
    assert bad.status_code == 422 and "line 2" in bad.json()["detail"]
    other = shared_world.client.post("/api/v1/reports/target-populations", content="jurisdiction_code,year,population\nPK-SD-KRC,2023,5\n",
                                     headers=h)
    assert other.status_code == 404


def test_chart_is_accessible_svg(shared_world, place):
    r = get(shared_world, "official_district", "coverage/chart.svg", jurisdiction="PK-PB-LAH", cohort=COHORT, item="PENTA-1",
            measure="any")
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
    root = ET.fromstring(r.text)
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{ns}svg" and root.get("role") == "img"
    assert "PENTA-1" in root.find(f"{ns}title").text and root.find(f"{ns}desc").text
    texts = [t.text or "" for t in root.iter(f"{ns}text")]
    assert any("Coverage" in t for t in texts) and any(t.endswith("%") for t in texts)
    assert get(shared_world, "official_district", "coverage/chart.svg", cohort=COHORT, item="NOPE-1").status_code == 422


def test_write_paths_queue_the_patient_and_a_report_folds_it_in(shared_world, place, runtime):
    with runtime.sessions.begin() as s:
        username = f"clinic.report.{place.tehsil.lower()}"
        create_user(s, runtime, UserCreate(username=username, display_name="x", password=PASSWORD, role="clinic_worker",
                                           scope_code=place.facilities[1]))
    c = shared_world.client
    tok = c.post("/api/v1/auth/token", data={"username": username, "password": PASSWORD}).json()["access_token"]
    h = {"Authorization": f"Bearer {tok}"}
    from tests.conftest import new_child

    r = c.post("/api/v1/patients", json=new_child(birth_date="2026-01-05", district="PK-PB-LAH"), headers=h)
    assert r.status_code == 201, r.json()
    pid = r.json()["id"]
    r = c.post(f"/api/v1/patients/{pid}/immunizations", json={"vaccine": "BCG", "dose_number": 1, "date_given": "2026-01-06"},
               headers=h)
    assert r.status_code == 201, r.json()
    with runtime.sessions() as s:
        queued = s.execute(select(DirtyPatient.patient_id)).scalars().all()
    assert sum(str(q) == pid for q in queued) == 2  # once for the registration, once for the dose
    assert get(shared_world, "official_district", "coverage", jurisdiction=place.tehsil, cohort="2026-01").status_code == 200
    with runtime.sessions() as s:
        status = s.execute(select(ChildStatus).where(ChildStatus.patient_id == uuid.UUID(pid))).scalar_one()
        assert status.leaf == place.ucs[1] and status.cohort_month == 202601 and status.any_mask & 1 == 1
        assert not [q for q in s.execute(select(DirtyPatient.patient_id)).scalars() if str(q) == pid]


def test_a_report_with_a_past_as_of_never_changes_the_aggregates(shared_world, place, runtime):
    """No schedule was in force in 2020: folding queued changes in as of then would judge every
    refreshed child as having no valid dose. A report's as_of must not reach the aggregates."""
    from registry.reports import aggregate, queue
    from registry.reports.models import CoverageCount

    def state():
        with runtime.sessions() as s:
            rows = s.execute(select(ChildStatus.patient_id, ChildStatus.any_mask, ChildStatus.valid_mask)
                             .where(ChildStatus.leaf.in_(place.ucs))).all()
            counts = s.execute(select(CoverageCount.item, CoverageCount.any_count, CoverageCount.valid_count)
                               .where(CoverageCount.leaf.in_(place.ucs))).all()
        return sorted(map(tuple, rows)), sorted(map(tuple, counts))

    with runtime.sessions.begin() as s:
        while aggregate.refresh(s, date.today(), 1000):
            pass
    before = state()
    assert any(v for _, _, v in before[0])  # some valid doses to lose
    with runtime.sessions.begin() as s:
        for pid, _, _ in before[0]:
            queue.mark(s, pid)  # every child of the place is queued when the report is asked for
    r = get(shared_world, "official_district", "coverage", jurisdiction=place.tehsil, cohort=COHORT, as_of="2020-01-01")
    assert r.status_code == 200, r.json()
    assert state() == before


def test_dhis2_sends_one_value_per_element_period_org_unit_and_combo(shared_world, runtime):
    """A district with facilities of its own beside its tehsil: its report has a row for its own
    facilities and its total, both the district's organisation unit. Only the total is sent."""
    import secrets

    from sqlalchemy import update

    from registry.facilities import repository as facilities
    from registry.jurisdictions import repository as jurisdictions
    from registry.patients.models import Patient

    tag = secrets.token_hex(3).upper()
    district, tehsil = f"PK-PB-D{tag}", f"PK-PB-D{tag}-T1"
    place = Place.__new__(Place)
    place.rt, place.facilities = runtime, [f"F-D{tag}-OWN", f"F-D{tag}-T1"]
    with runtime.sessions.begin() as s:
        jurisdictions.load(s, [{"code": district, "name": f"District {tag}", "level": "district", "parent_code": "PK-PB"},
                               {"code": tehsil, "name": f"Tehsil {tag}", "level": "tehsil", "parent_code": district}])
        facilities.add(s, place.facilities[0], "DHQ", "dhq", district)
        facilities.add(s, place.facilities[1], "BHU", "bhu", tehsil)
        s.flush()
        for uc, n in ((0, 6), (1, 8)):
            for k in range(n):
                birth = date(2023, 4, 1) + timedelta(days=k)
                pid = place.child(s, birth, uc=uc, doses=[("PENTA", 1, birth + timedelta(days=45))], mark=True)
                s.execute(update(Patient.__table__).where(Patient.__table__.c.id == pid).values(district=district))
    mapping = {"jurisdiction": "PK-PB", "data_elements": {"PENTA-1": {"dataElement": "fClA2Erf6IO"}},
               "org_units": {district: f"Dx{tag}AB1", tehsil: f"Tx{tag}AB2"}}
    r = shared_world.client.put("/api/v1/reports/dhis2-mapping", json=mapping, headers=shared_world.h("official_province"))
    assert r.status_code == 200, r.json()
    report = get(shared_world, "official_province", "coverage", jurisdiction=district, cohort=COHORT).json()
    assert {row["code"] for row in report["rows"]} == {tehsil, district}  # its own facilities beside its tehsil
    r = get(shared_world, "official_province", "coverage/export", jurisdiction=district, cohort=COHORT, format="dhis2")
    assert r.status_code == 200
    values = r.json()["dataValues"]
    keys = [(v["dataElement"], v["period"], v["orgUnit"], v.get("categoryOptionCombo")) for v in values]
    assert len(keys) == len(set(keys)), "two values for one data element, period, org unit and combo"
    by_unit = {v["orgUnit"]: v["value"] for v in values}
    assert by_unit == {mapping["org_units"][district]: "14", mapping["org_units"][tehsil]: "8"}
