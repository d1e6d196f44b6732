"""The guardian's pages (`/my`): the citizen API's login (throttle, audit), a server-side session
bound to the child and the access code's generation, the record, doses and access log through the
citizen services, and nothing of any other child."""

from __future__ import annotations

import uuid

from conftest import audit_events
from console_helpers import browser, csrf_of


def guardian_login(app, child, code=None, **headers):
    c = browser(app)
    token = csrf_of(c.get("/my/login").text)
    r = c.post("/my/login", data={"csrf": token, "health_id": child["health_id"], "access_code": code or child["access_code"]},
               headers=headers)
    return c, r


def test_guardian_sees_the_childs_record_doses_and_access_log(app, runtime, world):
    child = world.register("clinic_a")
    other = world.register("clinic_a")
    r = world.client.post(f"/api/v1/patients/{child['id']}/immunizations", headers=world.h("clinic_a"),
                          json={"vaccine": "BCG", "dose_number": 1, "date_given": child["_input"]["birth_date"]})
    assert r.status_code == 201
    rid = uuid.uuid4().hex
    c, r = guardian_login(app, child, **{"X-Request-ID": rid})
    assert r.status_code == 303 and r.headers["location"] == "/my"
    assert [(e.action, e.outcome) for e in audit_events(runtime, request_id=rid)] == [("citizen.login", "success")]
    rid = uuid.uuid4().hex
    page = c.get("/my", headers={"X-Request-ID": rid})
    assert page.status_code == 200 and child["_input"]["given_name"] in page.text and "BCG" in page.text
    assert "patient.create" in page.text  # the access log lists the registration
    assert other["_input"]["given_name"] not in page.text
    assert sorted(e.action for e in audit_events(runtime, request_id=rid)) == [
        "citizen.access_log", "citizen.immunizations", "citizen.read"]
    csrf = csrf_of(page.text)
    for method, path in (("GET", "/console"), ("GET", "/console/children"), ("POST", "/console/children/record"),
                         ("POST", "/console/coverage"), ("POST", "/console/audit"), ("GET", "/console/staff")):
        r = c.request(method, path, data={"csrf": csrf, "patient_id": other["id"], "cohort": "2026"} if method == "POST" else None)
        assert r.status_code == 403, (method, path)  # a guardian session opens no staff page
    # reissuing the access code ends the session, as it ends a citizen token
    assert world.client.post(f"/api/v1/patients/{child['id']}/access-code", headers=world.h("clinic_a")).status_code == 201
    r = c.get("/my")
    assert r.status_code == 303 and r.headers["location"] == "/my/login"


def test_guardian_wrong_code_is_refused_audited_and_logout_ends_the_session(app, runtime, world):
    child = world.register("clinic_a")
    rid = uuid.uuid4().hex
    _, r = guardian_login(app, child, code="WRNG-WRNG-WRN", **{"X-Request-ID": rid})
    assert r.status_code == 401 and "incorrect health ID or access code" in r.text and "WRNG" not in r.text
    assert [(e.action, e.outcome) for e in audit_events(runtime, request_id=rid)] == [("citizen.login", "unauthenticated")]
    c, r = guardian_login(app, child)
    stolen = {"Cookie": f"__Host-nhr_session={c.cookies.get('__Host-nhr_session')}"}
    csrf = csrf_of(c.get("/my").text)
    assert c.post("/my/logout", data={"csrf": csrf}).status_code == 303
    assert browser(app).get("/my", headers=stolen).status_code == 303


def test_guardian_gets_the_certificate_as_a_qr_code_and_a_printable_card(app, runtime, world):
    import json

    from console_helpers import signed_in

    child = world.register("clinic_a")
    r = world.client.post(f"/api/v1/patients/{child['id']}/immunizations", headers=world.h("clinic_a"),
                          json={"vaccine": "OPV", "dose_number": 0, "date_given": child["_input"]["birth_date"]})
    assert r.status_code == 201
    c, _ = guardian_login(app, child)
    assert 'href="/my/certificate"' in c.get("/my").text
    rid = uuid.uuid4().hex
    page = c.get("/my/certificate", headers={"X-Request-ID": rid})
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    assert '<svg viewBox="0 0 ' in page.text and 'role="img"' in page.text and "<script" not in page.text
    assert child["_input"]["given_name"] in page.text
    [ev] = audit_events(runtime, request_id=rid)
    assert (ev.action, ev.outcome, str(ev.patient_id)) == ("citizen.certificate", "success", child["id"])
    detail = ev.detail if isinstance(ev.detail, dict) else json.loads(ev.detail)
    assert detail["uvci"] in page.text  # the card shows the certificate that was issued and audited
    rid = uuid.uuid4().hex  # no certified dose against measles: a page that says so, audited as the API's refusal
    page = c.get("/my/certificate", params={"disease": "measles"}, headers={"X-Request-ID": rid})
    assert page.status_code == 422 and "<svg viewBox" not in page.text and "No certificate can be issued" in page.text
    assert [(e.action, e.outcome) for e in audit_events(runtime, request_id=rid)] == [("citizen.certificate", "invalid")]
    assert browser(app).get("/my/certificate").headers["location"] == "/my/login"  # no session
    staff, _ = signed_in(app, world.users["clinic_a"])
    assert staff.get("/my/certificate").status_code == 403  # a staff session is no guardian's
