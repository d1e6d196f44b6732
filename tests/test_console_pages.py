"""Console pages call the same services through the same gate as the API (issue 14): the same
answers, the same scope (404 outside it), the same audit events; identifiers only in POST bodies."""

from __future__ import annotations

import re
import uuid

import pytest

from conftest import audit_events
from console_helpers import browser, csrf_of, log_in, signed_in


@pytest.fixture(scope="module")
def child(shared_world):
    w = shared_world
    p = w.register("clinic_a")
    for vaccine, n in (("BCG", 1), ("OPV", 0)):
        r = w.client.post(f"/api/v1/patients/{p['id']}/immunizations", headers=w.h("clinic_a"),
                          json={"vaccine": vaccine, "dose_number": n, "date_given": p["_input"]["birth_date"]})
        assert r.status_code == 201, r.json()
    return p


def _events(runtime, rid):
    return [(e.action, e.outcome) for e in audit_events(runtime, request_id=rid)]


def test_official_finds_a_child_and_opens_the_record_with_the_apis_audit_events(app, runtime, shared_world, child):
    c, csrf = signed_in(app, shared_world.users["official_district"])
    rid = uuid.uuid4().hex
    r = c.post("/console/children/find", data={"csrf": csrf, "system": "bform", "value": child["_input"]["bform"]},
               headers={"X-Request-ID": rid})
    assert r.status_code == 200 and child["health_id"] in r.text and child["_input"]["given_name"] in r.text
    assert str(r.url).endswith("/console/children/find")  # the identifier travelled in the body only
    [ev] = audit_events(runtime, request_id=rid)
    assert (ev.action, ev.outcome, ev.purpose_of_use, ev.break_glass) == ("patient.search", "success", "PUBHLTH", False)
    rid = uuid.uuid4().hex
    r = c.post("/console/children/record", data={"csrf": csrf, "patient_id": child["id"]}, headers={"X-Request-ID": rid})
    assert r.status_code == 200 and "BCG" in r.text and "Schedule status" in r.text
    assert r.headers["cache-control"] == "no-store"
    events = _events(runtime, rid)
    assert ("patient.read", "success") in events and len(events) == 3  # record, doses, schedule: one event per service


def test_a_clinic_worker_cannot_open_another_provinces_child_through_the_console(app, runtime, shared_world, child):
    c, csrf = signed_in(app, shared_world.users["clinic_c"])
    rid = uuid.uuid4().hex
    r = c.post("/console/children/record", data={"csrf": csrf, "patient_id": child["id"]}, headers={"X-Request-ID": rid})
    assert r.status_code == 404 and child["_input"]["given_name"] not in r.text
    console_events = _events(runtime, rid)
    rid = uuid.uuid4().hex
    api = shared_world.client.get(f"/api/v1/patients/{child['id']}", headers=shared_world.h("clinic_c", **{"X-Request-ID": rid}))
    assert api.status_code == 404  # the same answer as the API, and the same event
    assert console_events == _events(runtime, rid) == [("patient.read", "denied")]


def test_break_glass_through_the_console_is_marked_and_audited(app, runtime, shared_world, child):
    c, csrf = signed_in(app, shared_world.users["official_other_province"])
    reason = "child brought unconscious to emergency"
    rid = uuid.uuid4().hex
    r = c.post("/console/children/record", data={"csrf": csrf, "patient_id": child["id"], "reason": reason},
               headers={"X-Request-ID": rid})
    assert r.status_code == 200 and "Emergency access" in r.text
    ev = next(e for e in audit_events(runtime, request_id=rid) if e.action == "patient.read")
    assert ev.break_glass and ev.break_glass_reason == reason and ev.purpose_of_use == "ETREAT"
    rid = uuid.uuid4().hex
    r = c.post("/console/children/record", data={"csrf": csrf, "patient_id": child["id"], "reason": "short"},
               headers={"X-Request-ID": rid})
    assert r.status_code == 422 and "short" not in r.text.replace("break-glass reason", "")
    assert _events(runtime, rid) == [("patient.read", "invalid")]


@pytest.mark.parametrize("who", ["auditor", "admin"])
def test_roles_without_clinical_access_are_refused_and_audited(app, runtime, shared_world, child, who):
    c, csrf = signed_in(app, shared_world.users[who])
    rid = uuid.uuid4().hex
    r = c.post("/console/children/record", data={"csrf": csrf, "patient_id": child["id"]}, headers={"X-Request-ID": rid})
    assert r.status_code == 403 and child["_input"]["given_name"] not in r.text
    assert _events(runtime, rid) == [("patient.read", "denied")]


@pytest.mark.parametrize("path", ["/console/children/find", "/console/children/record"])
def test_without_a_session_pages_redirect_to_login_and_the_attempt_is_audited(app, runtime, path):
    rid = uuid.uuid4().hex
    r = browser(app).post(path, data={"system": "nhr", "value": "X", "patient_id": str(uuid.uuid4())},
                          headers={"X-Request-ID": rid})
    assert r.status_code == 303 and r.headers["location"] == "/console/login"
    [ev] = audit_events(runtime, request_id=rid)
    assert ev.outcome == "unauthenticated" and ev.actor_user_id is None


def test_verify_page_shows_valid_or_the_reason(app, shared_world, child):
    w = shared_world
    hc1 = w.client.get(f"/api/v1/patients/{child['id']}/certificate", headers=w.h("clinic_a")).json()["hc1"]
    c = browser(app)
    page = c.get("/verify")
    assert page.status_code == 200
    r = c.post("/verify", data={"csrf": csrf_of(page.text), "hc1": hc1})
    assert r.status_code == 200 and "Valid certificate" in r.text and child["_input"]["given_name"] in r.text
    r = c.post("/verify", data={"csrf": csrf_of(page.text), "hc1": hc1[:-6] + "AAAAAA"})
    assert r.status_code == 200 and "Not valid" in r.text and child["_input"]["given_name"] not in r.text
    r = c.post("/verify", data={"hc1": hc1})  # no CSRF token
    assert r.status_code == 403


def test_urdu_pages_are_right_to_left_and_translated(app):
    c = browser(app)
    r = c.get("/console/language/ur?back=/verify")
    assert r.status_code == 303 and r.headers["location"] == "/verify"
    page = c.get("/verify", headers={"Cookie": "nhr_lang=ur"})
    assert 'lang="ur" dir="rtl"' in page.text and "سرٹیفکیٹ" in page.text
    assert c.get("/console/language/ur?back=//evil.example").headers["location"] == "/console"


def test_official_coverage_dashboard_drill_down_chart_and_csv(app, runtime, shared_world, child):
    c, csrf = signed_in(app, shared_world.users["official_province"])
    assert c.get("/console/coverage").status_code == 200
    rid = uuid.uuid4().hex
    r = c.post("/console/coverage", data={"csrf": csrf, "cohort": "2026", "jurisdiction": "", "item": "BCG-1"},
               headers={"X-Request-ID": rid})
    assert r.status_code == 200 and "<svg" in r.text and 'role="img"' in r.text and "PK-PB-LAH" in r.text
    [ev] = audit_events(runtime, request_id=rid)
    assert (ev.action, ev.outcome, ev.resource_id) == ("report.coverage", "success", "PK-PB")
    rid = uuid.uuid4().hex  # drill down to a district
    r = c.post("/console/coverage", data={"csrf": csrf, "cohort": "2026", "jurisdiction": "PK-PB-LAH"}, headers={"X-Request-ID": rid})
    assert r.status_code == 200
    assert [(e.action, e.resource_id) for e in audit_events(runtime, request_id=rid)] == [("report.coverage", "PK-PB-LAH")]
    rid = uuid.uuid4().hex
    r = c.post("/console/coverage/export", data={"csrf": csrf, "cohort": "2026", "jurisdiction": "PK-PB-LAH"},
               headers={"X-Request-ID": rid})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.text.startswith("jurisdiction_code,") and r.headers["cache-control"] == "no-store"
    assert _events(runtime, rid) == [("report.export", "success")]
    rid = uuid.uuid4().hex  # another province answers 404, as the API does
    r = c.post("/console/coverage", data={"csrf": csrf, "cohort": "2026", "jurisdiction": "PK-SD"}, headers={"X-Request-ID": rid})
    assert r.status_code == 404 and _events(runtime, rid) == [("report.coverage", "denied")]


def test_a_clinic_worker_has_no_coverage_dashboard(app, runtime, shared_world):
    c, csrf = signed_in(app, shared_world.users["clinic_a"])
    rid = uuid.uuid4().hex
    r = c.post("/console/coverage", data={"csrf": csrf, "cohort": "2026"}, headers={"X-Request-ID": rid})
    assert r.status_code == 403 and _events(runtime, rid) == [("report.coverage", "denied")]
    assert "/console/coverage" not in c.get("/console").text


def test_auditor_searches_events_with_filters_through_the_same_service(app, runtime, shared_world, child):
    w = shared_world
    reason = "unconscious child at the border post"
    r = w.client.get(f"/api/v1/patients/{child['id']}", headers=w.h("official_other_province", **{"X-Break-Glass-Reason": reason}))
    assert r.status_code == 200
    c, csrf = signed_in(app, w.users["auditor"])
    assert c.get("/console/audit").status_code == 200
    rid = uuid.uuid4().hex
    r = c.post("/console/audit", data={"csrf": csrf, "patient_id": child["id"], "break_glass": "yes", "action": "patient.read",
                                       "outcome": "success", "since": "2026-01-01"}, headers={"X-Request-ID": rid})
    assert r.status_code == 200 and reason in r.text and w.users["official_other_province"] in r.text
    assert child["id"] not in str(r.url)
    assert _events(runtime, rid) == [("audit.query", "success")]
    r = c.post("/console/audit", data={"csrf": csrf, "patient_id": child["id"], "break_glass": "no", "action": "nothing.such"})
    assert r.status_code == 200 and reason not in r.text and "No event matches" in r.text
    c2, csrf2 = signed_in(app, w.users["clinic_a"])
    rid = uuid.uuid4().hex
    r = c2.post("/console/audit", data={"csrf": csrf2}, headers={"X-Request-ID": rid})
    assert r.status_code == 403 and _events(runtime, rid) == [("audit.query", "denied")]


def test_administrator_creates_and_deactivates_staff_with_audit(app, runtime, shared_world):
    w = shared_world
    c, csrf = signed_in(app, w.users["admin"])
    page = c.get("/console/staff")
    assert page.status_code == 200 and w.users["clinic_a"] in page.text
    username = f"vaccinator.{uuid.uuid4().hex[:8]}"
    rid = uuid.uuid4().hex
    r = c.post("/console/staff/create", headers={"X-Request-ID": rid}, data={
        "csrf": csrf, "username": username, "display_name": "New Vaccinator", "password": "a-long-enough-passphrase-77",
        "role": "clinic_worker", "scope_code": w.facilities["a"]})
    assert r.status_code == 303 and _events(runtime, rid) == [("user.create", "success")]
    assert "a-long-enough-passphrase-77" not in c.get("/console/staff").text
    newbie = browser(app)
    assert log_in(newbie, username, "a-long-enough-passphrase-77").status_code == 303  # the new account logs in
    assert newbie.get("/console").status_code == 200
    user_id = next(u["id"] for u in w.client.get("/api/v1/users", headers=w.h("admin")).json() if u["username"] == username)
    rid = uuid.uuid4().hex
    r = c.post("/console/staff/deactivate", data={"csrf": csrf, "user_id": user_id}, headers={"X-Request-ID": rid})
    assert r.status_code == 303 and _events(runtime, rid) == [("user.deactivate", "success")]
    assert newbie.get("/console").status_code == 303  # its session ended with it
    r = c.post("/console/staff/create", data={"csrf": csrf, "username": f"x.{uuid.uuid4().hex[:6]}", "display_name": "X",
                                              "password": "password", "role": "clinic_worker", "scope_code": w.facilities["a"]})
    assert r.status_code == 422 and "password" in r.text


def test_only_administrators_manage_staff(app, runtime, shared_world):
    w = shared_world
    c, csrf = signed_in(app, w.users["auditor"])
    page = c.get("/console/staff")
    assert page.status_code == 200 and "/console/staff/deactivate" not in page.text  # auditors read the list only
    rid = uuid.uuid4().hex
    r = c.post("/console/staff/deactivate", data={"csrf": csrf, "user_id": str(uuid.uuid4())}, headers={"X-Request-ID": rid})
    assert r.status_code == 403 and _events(runtime, rid) == [("user.deactivate", "denied")]
    c, csrf = signed_in(app, w.users["clinic_a"])
    assert c.get("/console/staff").status_code == 403


def test_auditor_reviews_a_break_glass_access_with_a_finding(app, runtime, world):
    child = world.register("clinic_a")
    reason = f"emergency at a border clinic {uuid.uuid4().hex[:6]}"
    rid = uuid.uuid4().hex
    r = world.client.get(f"/api/v1/patients/{child['id']}",
                         headers=world.h("official_other_province", **{"X-Break-Glass-Reason": reason, "X-Request-ID": rid}))
    assert r.status_code == 200
    [bg] = audit_events(runtime, request_id=rid)
    c, csrf = signed_in(app, world.users["auditor"])
    rid = uuid.uuid4().hex
    page = c.get("/console/audit/break-glass", headers={"X-Request-ID": rid})
    assert page.status_code == 200 and reason in page.text and _events(runtime, rid) == [("audit.review_queue", "success")]
    rid = uuid.uuid4().hex
    r = c.post("/console/audit/break-glass/finding", data={"csrf": csrf, "event_id": str(bg.id), "verdict": "justified",
                                                          "note": "confirmed with the clinic"}, headers={"X-Request-ID": rid})
    assert r.status_code == 303 and _events(runtime, rid) == [("audit.finding", "success")]
    reviewed = c.get("/console/audit/break-glass?status=reviewed").text
    assert reason in reviewed and "confirmed with the clinic" in reviewed
    r = c.post("/console/audit/break-glass/finding", data={"csrf": csrf, "event_id": str(bg.id), "verdict": "not_justified"})
    assert r.status_code == 409  # final, as in the API
    admin, admin_csrf = signed_in(app, world.users["admin"])
    assert admin.get("/console/audit/break-glass").status_code == 403


def test_due_list_for_a_facility_and_refused_outside_scope(app, runtime, shared_world, child):
    w = shared_world
    c, csrf = signed_in(app, w.users["clinic_a"])
    assert w.facilities["a"] in c.get("/console/due").text
    rid = uuid.uuid4().hex
    r = c.post("/console/due", data={"csrf": csrf, "kind": "facility", "code": w.facilities["a"], "date_from": "2026-07-01",
                                     "date_to": "2026-07-31"}, headers={"X-Request-ID": rid})
    assert r.status_code == 200 and child["_input"]["given_name"] in r.text and "PENTA-1" in r.text
    assert _events(runtime, rid) == [("immunization.due_list", "success")]
    api = w.client.get(f"/api/v1/facilities/{w.facilities['a']}/due-list", params={"from": "2026-07-01", "to": "2026-07-31"},
                       headers=w.h("clinic_a"))
    assert child["id"] in {row["patient_id"] for row in api.json()["items"]}  # the API lists the same child
    rid = uuid.uuid4().hex
    r = c.post("/console/due", data={"csrf": csrf, "kind": "facility", "code": w.facilities["c"]}, headers={"X-Request-ID": rid})
    assert r.status_code == 404 and [a for a, _ in _events(runtime, rid)] == ["immunization.due_list"]


def test_a_pages_first_load_is_light_and_its_assets_are_fingerprinted(app, shared_world):
    """Under 150 KB for the heaviest page's first load (HTML and every asset it links), with no script;
    assets are immutable under a content fingerprint, pages are never cached."""
    c, csrf = signed_in(app, shared_world.users["official_province"])
    page = c.post("/console/coverage", data={"csrf": csrf, "cohort": "2026"})
    assert page.status_code == 200 and "<script" not in page.text and page.headers["cache-control"] == "no-store"
    assets = re.findall(r'(?:href|src)="(/console/static/[^"]+)"', page.text)
    assert len(assets) == 2
    total = len(page.content)
    for url in assets:
        r = c.get(url)
        assert r.status_code == 200 and "immutable" in r.headers["cache-control"]
        total += len(r.content)
    assert total < 150_000
    assert c.get("/console/static/0000000000000000/console.css").status_code == 404
