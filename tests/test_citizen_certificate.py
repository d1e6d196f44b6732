"""The guardian's certificate (issue 14): `GET /api/v1/citizen/me/certificate` issues the child's
HC1 certificate as a clinic would (a recorded UVCI, doses administered here only), for the child the
token is bound to and no other, audited as `citizen.certificate` like the other citizen reads."""

from __future__ import annotations

import json

from conftest import audit_events
from test_citizen_access import citizen_headers

ME = "/api/v1/citizen/me/certificate"


def _dose(world, child, vaccine="OPV", n=0):
    r = world.client.post(f"/api/v1/patients/{child['id']}/immunizations", headers=world.h("clinic_a"),
                          json={"vaccine": vaccine, "dose_number": n, "date_given": child["_input"]["birth_date"]})
    assert r.status_code == 201, r.json()


def test_guardian_gets_the_childs_certificate_and_it_verifies(world, runtime):
    c = world.client
    child, other = world.register("clinic_a"), world.register("clinic_a")
    _dose(world, child)
    _dose(world, other)
    r = c.get(ME, headers=citizen_headers(c, child))
    assert r.status_code == 200, r.json()
    body = r.json()
    assert body["hc1"].startswith("HC1:") and body["disease"] == "polio" and r.headers["cache-control"] == "no-store"
    [ev] = audit_events(runtime, request_id=r.headers["X-Request-ID"])
    assert (ev.action, ev.outcome, ev.actor_role, str(ev.patient_id)) == ("citizen.certificate", "success", "citizen", child["id"])
    detail = ev.detail if isinstance(ev.detail, dict) else json.loads(ev.detail)
    assert detail["uvci"] == body["uvci"] and child["_input"]["given_name"] not in json.dumps(detail)
    v = c.post("/api/v1/certificates/verify", json={"hc1": body["hc1"]}).json()
    assert v["valid"] is True and v["certificate"]["nam"]["gn"] == child["_input"]["given_name"]
    assert v["certificate"]["nam"]["gn"] != other["_input"]["given_name"]
    # the UVCI is recorded like a clinic's: an official can revoke it, and verifiers then refuse it
    r = c.post(f"/api/v1/certificates/{body['uvci'].replace('#', '%23')}/revoke", headers=world.h("official_district"),
               json={"reason": "issued-in-error"})
    assert r.status_code == 200, r.json()
    assert c.post("/api/v1/certificates/verify", json={"hc1": body["hc1"]}).json()["error"]["code"] == "revoked"


def test_no_certified_dose_is_422_and_staff_or_anonymous_callers_are_refused(world, runtime):
    c = world.client
    child = world.register("clinic_a")
    r = c.get(ME, headers=citizen_headers(c, child))
    assert r.status_code == 422 and "disease" in json.dumps(r.json())
    [ev] = audit_events(runtime, request_id=r.headers["X-Request-ID"])
    assert (ev.action, ev.outcome) == ("citizen.certificate", "invalid")
    assert c.get(ME, headers=world.h("clinic_a")).status_code == 403  # a staff token has no citizen view
    r = c.get(ME)
    assert r.status_code == 401
    [ev] = audit_events(runtime, request_id=r.headers["X-Request-ID"])
    assert (ev.action, ev.outcome) == ("citizen.certificate", "unauthenticated")
