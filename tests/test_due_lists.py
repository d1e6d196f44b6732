"""Due and overdue (defaulter) lists per facility and per union council (issue 4): rows agree
with the patient's own schedule endpoint (the engine), pages follow the cursor, scope is the
caller's (404 audited `denied` outside it), and each read is audited with its subjects.
Values are compared, never printed."""

from __future__ import annotations


from sqlalchemy import select

from conftest import PASSWORD, audit_events
from registry.facilities import repository as facilities
from registry.users.schemas import UserCreate
from registry.users.service import create_user
from security.audit.models import AuditEventSubjectRow

RANGE = {"from": "2026-07-13", "to": "2026-07-20"}
UC = "PK-PB-LAH-T01-U001"


def _dose(w, pid, vaccine, n, day, who="clinic_a"):
    r = w.client.post(f"/api/v1/patients/{pid}/immunizations", json={"vaccine": vaccine, "dose_number": n, "date_given": day},
                      headers=w.h(who))
    assert r.status_code == 201, r.json()


def _get(w, who, path, **params):
    return w.client.get(path, params={**RANGE, **params}, headers=w.h(who))


def _expected(w, pid) -> set[tuple]:
    """What the list must show for a child: from the schedule endpoint as of `from`."""
    r = w.client.get(f"/api/v1/patients/{pid}/schedule", params={"as_of": RANGE["from"]}, headers=w.h("clinic_a"))
    assert r.status_code == 200
    out = set()
    for f in r.json()["forecast"]:
        if f["status"] in ("due", "overdue") or (f["status"] == "not_yet_due" and RANGE["from"] <= f["recommended"] <= RANGE["to"]):
            out.add((f["vaccine"], f["dose_number"], "overdue" if f["status"] == "overdue" else "due",
                     f["earliest"], f["recommended"], f["latest"]))
    return out


def _subjects(rt, event_id) -> set[str]:
    t = AuditEventSubjectRow.__table__
    with rt.sessions() as s:
        return {str(r.patient_id) for r in s.execute(select(t).where(t.c.event_id == event_id)).all()}


def _one_event(rt, r):
    events = audit_events(rt, request_id=r.headers["X-Request-ID"])
    assert len(events) == 1, [(e.action, e.outcome) for e in events]
    return events[0]


def _children(w):
    on_time = w.register("clinic_a", birth_date="2026-06-01")
    _dose(w, on_time["id"], "BCG", 1, "2026-06-01")
    _dose(w, on_time["id"], "OPV", 0, "2026-06-01")
    defaulter = w.register("clinic_a", birth_date="2026-01-01")  # nothing given: overdue
    newborn = w.register("clinic_a", birth_date="2026-07-10")  # birth doses given, next due in August
    for v, n in (("BCG", 1), ("OPV", 0), ("HEPB", 1)):
        _dose(w, newborn["id"], v, n, "2026-07-10")
    return on_time, defaulter, newborn


def test_facility_list_matches_the_engine_and_is_audited_with_its_subjects(world, runtime):
    on_time, defaulter, newborn = _children(world)
    r = _get(world, "clinic_a", f"/api/v1/facilities/{world.facilities['a']}/due-list")
    assert r.status_code == 200, r.json()
    body = r.json()
    assert (body["from"], body["to"], body["kind"], body["next_cursor"]) == (RANGE["from"], RANGE["to"], "facility", None)
    rows = {row["patient_id"]: row for row in body["items"]}
    assert set(rows) == {on_time["id"], defaulter["id"]}, "the newborn has nothing due in the range"
    for child in (on_time, defaulter):
        row = rows[child["id"]]
        got = {(d["vaccine"], d["dose_number"], d["status"], d["earliest"], d["recommended"], d["latest"]) for d in row["doses"]}
        assert got == _expected(world, child["id"]) and got
        same = (row["given_name"], row["family_name"], row["guardian_name"], row["phone"], row["birth_date"]) == \
            (child["given_name"], child["family_name"], child["_input"]["guardian"]["name"], child["phone"], child["birth_date"])
        assert same, "contact details differ from the registered ones"
    assert {d["status"] for d in rows[defaulter["id"]]["doses"]} >= {"overdue"}
    assert {(d["vaccine"], d["status"]) for d in rows[on_time["id"]]["doses"]} >= {("PENTA", "due"), ("OPV", "due")}
    ev = _one_event(runtime, r)
    assert (ev.action, ev.outcome, ev.resource_type) == ("immunization.due_list", "success", "Immunization")
    detail = ev.detail
    assert detail["facility"] == world.facilities["a"] and detail["count"] == 2
    assert _subjects(runtime, ev.id) == {on_time["id"], defaulter["id"]}
    for clinical in ("PENTA", "BCG", "overdue"):
        assert clinical not in str(detail)


def test_pages_follow_the_cursor(world):
    on_time, defaulter, _ = _children(world)
    path = f"/api/v1/facilities/{world.facilities['a']}/due-list"
    first = _get(world, "clinic_a", path, limit=1).json()
    assert len(first["items"]) == 1 and first["next_cursor"]
    second = _get(world, "clinic_a", path, limit=1, cursor=first["next_cursor"]).json()
    seen = [row["patient_id"] for row in first["items"] + second["items"]]
    assert sorted(seen) == sorted([on_time["id"], defaulter["id"]])
    if second["next_cursor"]:
        assert _get(world, "clinic_a", path, limit=1, cursor=second["next_cursor"]).json()["items"] == []
    bad = _get(world, "clinic_a", path, cursor="not-a-cursor")
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "cursor"


def test_range_is_checked(world):
    path = f"/api/v1/facilities/{world.facilities['a']}/due-list"
    r = world.client.get(path, params={"from": "2026-07-20", "to": "2026-07-13"}, headers=world.h("clinic_a"))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "to"
    r = world.client.get(path, params={"from": "2026-01-01", "to": "2026-12-31"}, headers=world.h("clinic_a"))
    assert r.status_code == 422


def test_scope_of_facility_lists(world, runtime):
    _children(world)
    path = f"/api/v1/facilities/{world.facilities['a']}/due-list"
    for who in ("clinic_a2", "clinic_c", "official_other_district", "official_other_province"):
        r = _get(world, who, path)
        assert r.status_code == 404, who
        ev = _one_event(runtime, r)
        assert (ev.action, ev.outcome) == ("immunization.due_list", "denied"), who
        assert _subjects(runtime, ev.id) == set()
    for who in ("official_district", "official_province", "official_national"):
        r = _get(world, who, path)
        assert r.status_code == 200 and len(r.json()["items"]) == 2, who
    unknown = _get(world, "official_national", "/api/v1/facilities/F-NO-SUCH-PLACE/due-list")
    assert unknown.status_code == 404 and _one_event(runtime, unknown).outcome == "not_found"
    assert _get(world, "auditor", path).status_code == 403


def test_children_living_outside_the_officials_district_are_not_on_its_lists(world, runtime):
    """The facility is in the official's district but the child lives in another: the official's
    capture scope is the residence, so the child is on the clinic's list and not on the official's."""
    child = world.register("clinic_a", birth_date="2026-01-01", district="PK-PB-RWP")
    path = f"/api/v1/facilities/{world.facilities['a']}/due-list"
    r = _get(world, "official_district", path)
    assert r.status_code == 200 and child["id"] not in {x["patient_id"] for x in r.json()["items"]}
    assert child["given_name"] not in r.text
    assert child["id"] not in _subjects(runtime, _one_event(runtime, r).id)
    mine = {x["patient_id"]: x for x in _get(world, "clinic_a", path).json()["items"]}
    assert mine[child["id"]]["given_name"] == child["given_name"]
    assert child["id"] in {x["patient_id"] for x in _get(world, "official_province", path).json()["items"]}


def _uc_clinic(world) -> str:
    """A facility located in union council UC, with a clinic worker of its own."""
    code = f"F-{world.tag}-UC".upper()
    with world.runtime.sessions.begin() as s:
        facilities.add(s, code, "Test BHU in a union council", "bhu", UC)
        s.flush()
        username = f"clinic.uc.{world.tag}"
        create_user(s, world.runtime, UserCreate(username=username, display_name="uc", password=PASSWORD,
                                                 role="clinic_worker", scope_code=code))
    world.users["clinic_uc"] = username
    return code


def test_union_council_lists(world, runtime):
    _uc_clinic(world)
    inside = world.register("clinic_uc", birth_date="2026-01-01")
    outside = world.register("clinic_a", birth_date="2026-01-01")  # facility a is not in the union council
    path = f"/api/v1/union-councils/{UC}/due-list"
    seen, cursor = set(), None
    for _ in range(50):  # other tests' worlds may add children to this union council
        page = _get(world, "official_district", path, limit=100, **({"cursor": cursor} if cursor else {}))
        assert page.status_code == 200, page.json()
        seen |= {row["patient_id"] for row in page.json()["items"]}
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert inside["id"] in seen and outside["id"] not in seen
    ev = _one_event(runtime, page)
    assert ev.detail["union_council"] == UC and ev.outcome == "success"
    for who in ("clinic_a", "clinic_uc", "official_other_district", "official_other_province"):
        r = _get(world, who, path)
        assert r.status_code == 404, who
        assert _one_event(runtime, r).outcome == "denied", who
    for code in ("PK-PB-LAH", "PK-PB-LAH-T01-U999"):  # a district is no union council; an unknown code
        r = _get(world, "official_district", f"/api/v1/union-councils/{code}/due-list")
        assert r.status_code == 404 and _one_event(runtime, r).outcome == "not_found"
