"""DESIGN invariant 4: every access to patient data writes exactly one audit event, in the data's
own transaction; if that event cannot be written, the data is not returned and the change is
not made. Also: a route that forgets to audit fails closed, and events hold no patient values.

Failing audit inserts are real database failures (a trigger on `audit_events`), not mocks, and
every trigger is dropped again in a `finally` because the database is shared by the session.
"""

from __future__ import annotations

import json
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Callable

import pytest
from fastapi import Depends
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from api.app import create_app
from api.deps import require
from conftest import audit_events, count_events, is_postgres, new_child, new_uuid
from registry.context import ServiceContext
from registry.immunizations.models import Immunization
from registry.patients.models import Patient, PatientIdentifierIndex
from security.access.permissions import Permission

PURPOSE = {"clinic_worker": "TREAT", "health_official": "PUBHLTH", "auditor": "HCOMPL", "admin": "HSYSADMIN"}
ROLE = {"clinic": "clinic_worker", "official": "health_official", "auditor": "auditor", "admin": "admin"}
BCG = {"vaccine": "BCG", "dose_number": 1, "date_given": "2026-06-02"}


def _role(who: str) -> str:
    return ROLE[who.split("_")[0]]


def _dose(w, pid: str, who: str = "clinic_a") -> dict:
    r = w.client.post(f"/api/v1/patients/{pid}/immunizations", json=BCG, headers=w.h(who))
    assert r.status_code == 201, r.json()
    return r.json()


# --- one audit event per request, success or refusal -------------------------------------------------

@dataclass
class Case:
    name: str
    who: str | None  # None: no token
    status: int
    action: str
    outcome: str
    build: Callable  # world -> (method, url, kwargs, patient id the event must name or None)


def _p(w):
    return w.register("clinic_a")


def _read(w, who, pid):
    return "GET", f"/api/v1/patients/{pid}", {}, pid


def _patch(w, pid, body, if_match='"1"'):
    return "PATCH", f"/api/v1/patients/{pid}", {"json": body, **({"headers": {"If-Match": if_match}} if if_match else {})}, pid


def _void(w, dose, if_match='"1"'):
    return "POST", f"/api/v1/immunizations/{dose['id']}/void", {"json": {"reason": "wrong child"}, "headers": {"If-Match": if_match}}, dose["patient_id"]


def _correct(w, dose, body=None, if_match='"1"'):
    body = {"dose_number": 1, "date_given": "2026-06-03", "reason": "wrong date"} if body is None else body
    return "POST", f"/api/v1/immunizations/{dose['id']}/correct", {"json": body, "headers": {"If-Match": if_match}}, dose["patient_id"]


def _voided(w):
    d = _dose(w, _p(w)["id"])
    assert w.client.post(f"/api/v1/immunizations/{d['id']}/void", json={"reason": "first void"},
                         headers=w.h("clinic_a", **{"If-Match": '"1"'})).status_code == 200
    return d


def _no_given_name():
    body = new_child()
    del body["given_name"]
    return body


CASES = [
    # register
    Case("register-ok", "clinic_a", 201, "patient.create", "success", lambda w: ("POST", "/api/v1/patients", {"json": new_child()}, None)),
    Case("register-401", None, 401, "patient.create", "unauthenticated", lambda w: ("POST", "/api/v1/patients", {"json": new_child()}, None)),
    Case("register-403-role", "official_district", 403, "patient.create", "denied", lambda w: ("POST", "/api/v1/patients", {"json": new_child()}, None)),
    Case("register-422", "clinic_a", 422, "patient.create", "invalid", lambda w: ("POST", "/api/v1/patients", {"json": _no_given_name()}, None)),
    Case("register-409-dup-bform", "clinic_c", 409, "patient.create", "conflict",
         lambda w: ("POST", "/api/v1/patients", {"json": new_child(bform=_p(w)["bform"])}, None)),
    # read
    Case("read-ok", "clinic_a", 200, "patient.read", "success", lambda w: _read(w, "clinic_a", _p(w)["id"])),
    Case("read-404-out-of-scope", "clinic_c", 404, "patient.read", "denied", lambda w: _read(w, "clinic_c", _p(w)["id"])),
    Case("read-404-missing", "clinic_a", 404, "patient.read", "not_found", lambda w: ("GET", f"/api/v1/patients/{new_uuid()}", {}, None)),
    Case("read-403-role", "auditor", 403, "patient.read", "denied", lambda w: (*_read(w, "auditor", _p(w)["id"])[:3], None)),
    Case("read-401", None, 401, "patient.read", "unauthenticated", lambda w: (*_read(w, None, _p(w)["id"])[:3], None)),
    Case("read-422-bad-uuid", "clinic_a", 422, "patient.read", "invalid", lambda w: ("GET", "/api/v1/patients/not-a-uuid", {}, None)),
    Case("read-422-short-break-glass-reason", "clinic_c", 422, "patient.read", "invalid",
         lambda w: ("GET", f"/api/v1/patients/{_p(w)['id']}", {"headers": {"X-Break-Glass-Reason": "urgent"}}, None)),
    Case("read-422-long-purpose-header", "clinic_a", 422, "patient.read", "invalid",
         lambda w: ("GET", f"/api/v1/patients/{_p(w)['id']}", {"headers": {"X-Purpose-Of-Use": "TREAT-AND-MORE-THAN-16"}}, None)),
    # list
    Case("list-ok", "clinic_a", 200, "patient.list", "success", lambda w: (_p(w), ("GET", "/api/v1/patients?limit=5", {}, None))[1]),
    Case("list-422-limit", "clinic_a", 422, "patient.list", "invalid", lambda w: ("GET", "/api/v1/patients?limit=101", {}, None)),
    Case("list-422-cursor", "clinic_a", 422, "patient.list", "invalid", lambda w: ("GET", "/api/v1/patients?cursor=AAAA-tampered", {}, None)),
    Case("list-403-role", "admin", 403, "patient.list", "denied", lambda w: ("GET", "/api/v1/patients", {}, None)),
    # search
    Case("search-ok", "clinic_c", 200, "patient.search", "success",
         lambda w: (lambda p: ("POST", "/api/v1/patients/search", {"json": {"system": "bform", "value": p["bform"]}}, p["id"]))(_p(w))),
    Case("search-422", "clinic_a", 422, "patient.search", "invalid",
         lambda w: ("POST", "/api/v1/patients/search", {"json": {"system": "bform", "value": "12-34"}}, None)),
    Case("search-403-role", "auditor", 403, "patient.search", "denied",
         lambda w: ("POST", "/api/v1/patients/search", {"json": {"system": "bform", "value": "35202-7654321-2"}}, None)),
    # update
    Case("update-ok", "clinic_a", 200, "patient.update", "success", lambda w: _patch(w, _p(w)["id"], {"family_name": "Durrani"})),
    Case("update-412-stale", "clinic_a", 412, "patient.update", "conflict", lambda w: _patch(w, _p(w)["id"], {"family_name": "Durrani"}, '"7"')),
    Case("update-428-no-if-match", "clinic_a", 428, "patient.update", "conflict", lambda w: _patch(w, _p(w)["id"], {"family_name": "Durrani"}, None)),
    Case("update-404-out-of-scope", "clinic_c", 404, "patient.update", "denied", lambda w: _patch(w, _p(w)["id"], {"family_name": "Durrani"})),
    Case("update-403-role", "official_district", 403, "patient.update", "denied",
         lambda w: (*_patch(w, _p(w)["id"], {"family_name": "Durrani"})[:3], None)),
    Case("update-422-phone", "clinic_a", 422, "patient.update", "invalid", lambda w: (*_patch(w, _p(w)["id"], {"phone": "12"})[:3], None)),
    # record a dose
    Case("dose-record-ok", "clinic_a", 201, "immunization.create", "success",
         lambda w: (lambda p: ("POST", f"/api/v1/patients/{p['id']}/immunizations", {"json": BCG}, p["id"]))(_p(w))),
    Case("dose-record-404-missing", "clinic_a", 404, "immunization.create", "not_found",
         lambda w: ("POST", f"/api/v1/patients/{new_uuid()}/immunizations", {"json": BCG}, None)),
    Case("dose-record-403-role", "official_district", 403, "immunization.create", "denied",
         lambda w: ("POST", f"/api/v1/patients/{_p(w)['id']}/immunizations", {"json": BCG}, None)),
    Case("dose-record-422-before-birth", "clinic_a", 422, "immunization.create", "invalid",
         lambda w: (lambda p: ("POST", f"/api/v1/patients/{p['id']}/immunizations", {"json": {**BCG, "date_given": "2026-05-01"}}, p["id"]))(_p(w))),
    # list doses
    Case("dose-list-ok", "clinic_a", 200, "immunization.list", "success",
         lambda w: (lambda p: ("GET", f"/api/v1/patients/{p['id']}/immunizations", {}, p["id"]))(_p(w))),
    Case("dose-list-404-out-of-scope", "official_other_province", 404, "immunization.list", "denied",
         lambda w: (lambda p: ("GET", f"/api/v1/patients/{p['id']}/immunizations", {}, p["id"]))(_p(w))),
    Case("dose-list-401", None, 401, "immunization.list", "unauthenticated",
         lambda w: ("GET", f"/api/v1/patients/{_p(w)['id']}/immunizations", {}, None)),
    # void
    Case("void-ok", "clinic_a", 200, "immunization.void", "success", lambda w: _void(w, _dose(w, _p(w)["id"]))),
    Case("void-412-stale", "clinic_a", 412, "immunization.void", "conflict", lambda w: _void(w, _dose(w, _p(w)["id"]), '"5"')),
    Case("void-412-twice", "clinic_a", 412, "immunization.void", "conflict", lambda w: _void(w, _voided(w))),
    Case("void-403-other-facility", "clinic_a2", 403, "immunization.void", "denied", lambda w: _void(w, _dose(w, _p(w)["id"]))),
    Case("void-404-missing", "clinic_a", 404, "immunization.void", "not_found",
         lambda w: ("POST", f"/api/v1/immunizations/{new_uuid()}/void", {"json": {"reason": "wrong child"}, "headers": {"If-Match": '"1"'}}, None)),
    # correct
    Case("correct-ok", "clinic_a", 201, "immunization.correct", "success", lambda w: _correct(w, _dose(w, _p(w)["id"]))),
    Case("correct-412-after-void", "clinic_a", 412, "immunization.correct", "conflict", lambda w: _correct(w, _voided(w))),
    Case("correct-403-role", "official_district", 403, "immunization.correct", "denied",
         lambda w: (*_correct(w, _dose(w, _p(w)["id"]))[:3], None)),
    Case("correct-422-no-reason", "clinic_a", 422, "immunization.correct", "invalid",
         lambda w: (*_correct(w, _dose(w, _p(w)["id"]), body={"dose_number": 1})[:3], None)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_request_leaves_exactly_one_audit_event(case: Case, world, runtime):
    method, url, kwargs, patient_id = case.build(world)
    headers = dict(kwargs.pop("headers", {}))
    if case.who:
        headers.update(world.h(case.who))  # logs in (itself audited) before counting
    before = count_events(runtime)
    r = world.client.request(method, url, headers=headers, **kwargs)
    after = count_events(runtime)

    assert r.status_code == case.status, f"{case.name}: status {r.status_code}"
    assert after - before == 1, f"{case.name}: {after - before} audit events written, expected exactly 1"
    rid = r.headers.get("X-Request-ID")
    assert rid, "response has no X-Request-ID"
    events = audit_events(runtime, request_id=rid)
    assert len(events) == 1, f"{case.name}: {len(events)} events carry the response's request id"
    ev = events[0]
    assert (ev.action, ev.outcome) == (case.action, case.outcome), f"{case.name}: got {(ev.action, ev.outcome)}"
    if case.who is None:
        assert ev.actor_username is None and ev.actor_user_id is None
    else:
        assert ev.actor_username == world.users[case.who]
        assert ev.actor_role == _role(case.who)
        # An invalid purpose header is recorded as no purpose rather than the raw header; a
        # break-glass attempt (even one refused for its short reason) claimed ETREAT.
        expected_purpose = {"read-422-short-break-glass-reason": "ETREAT",
                            "read-422-long-purpose-header": None}.get(case.name, PURPOSE[_role(case.who)])
        assert ev.purpose_of_use == expected_purpose
    if patient_id is not None:
        assert ev.patient_id == uuid.UUID(patient_id), f"{case.name}: event does not name the patient"
    assert ev.occurred_at is not None and ev.client_address


def test_client_request_id_is_echoed_and_recorded(world, runtime):
    p = world.register("clinic_a")
    rid = f"clinic-{uuid.uuid4().hex[:16]}"
    r = world.client.get(f"/api/v1/patients/{p['id']}", headers=world.h("clinic_a", **{"X-Request-ID": rid}))
    assert r.status_code == 200
    assert r.headers["X-Request-ID"] == rid
    assert [e.action for e in audit_events(runtime, request_id=rid)] == ["patient.read"]


# --- the audit insert fails: no data out, no change in ----------------------------------------------

@contextmanager
def audit_insert_fails(runtime, *, at_commit: bool = False):
    """A real database failure on every INSERT into audit_events (BEFORE INSERT), or, on
    PostgreSQL with at_commit, only when the transaction commits (deferred constraint trigger)."""
    pg = is_postgres(runtime)
    if pg:
        create = [
            "CREATE OR REPLACE FUNCTION nhr_test_audit_down() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'audit down'; END $$",
            "CREATE CONSTRAINT TRIGGER nhr_test_audit_down AFTER INSERT ON audit_events DEFERRABLE INITIALLY DEFERRED "
            "FOR EACH ROW EXECUTE FUNCTION nhr_test_audit_down()" if at_commit else
            "CREATE TRIGGER nhr_test_audit_down BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION nhr_test_audit_down()",
        ]
        drop = ["DROP TRIGGER IF EXISTS nhr_test_audit_down ON audit_events", "DROP FUNCTION IF EXISTS nhr_test_audit_down()"]
    else:
        assert not at_commit, "SQLite has no deferred triggers"
        create = ["CREATE TRIGGER nhr_test_audit_down BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'audit down'); END"]
        drop = ["DROP TRIGGER IF EXISTS nhr_test_audit_down"]
    try:
        with runtime.engine.begin() as c:
            for sql in create:
                c.execute(text(sql))
        yield
    finally:
        with runtime.engine.begin() as c:
            for sql in drop:
                c.execute(text(sql))


def _count(runtime, model, **where) -> int:
    q = select(func.count()).select_from(model)
    for k, v in where.items():
        q = q.where(getattr(model, k) == v)
    with runtime.sessions() as s:
        return s.execute(q).scalar_one()


def _values(child: dict) -> list[str]:
    i = child["_input"]
    return [i["given_name"], i["family_name"], i["bform"], i["bform"].replace("-", ""), i["guardian"]["name"],
            i["guardian"]["cnic"], i["address"], i["phone"][-7:], child["health_id"]]


def _assert_failed_closed(r, values: list[str] = ()):
    assert 500 <= r.status_code < 600, f"status {r.status_code}: the request succeeded without its audit event"
    assert r.headers["content-type"].startswith("application/problem+json")
    leaked = [i for i, v in enumerate(values) if v in r.text]  # indexes only: no patient value in the report
    assert not leaked, f"patient values #{leaked} appear in the error response"


def test_read_is_not_answered_when_its_audit_event_cannot_be_written(world, runtime):
    child = world.register("clinic_a")
    headers = world.h("clinic_a")
    with audit_insert_fails(runtime):
        r = world.client.get(f"/api/v1/patients/{child['id']}", headers=headers)
        _assert_failed_closed(r, _values(child))
        r = world.client.post("/api/v1/patients/search", json={"system": "bform", "value": child["bform"]}, headers=headers)
        _assert_failed_closed(r, _values(child))
        r = world.client.get("/api/v1/patients?limit=100", headers=headers)
        _assert_failed_closed(r, _values(child))
    assert world.client.get(f"/api/v1/patients/{child['id']}", headers=headers).status_code == 200, "trigger left behind"


def test_server_error_responses_carry_request_id_and_no_store(world, runtime):
    """A 5xx must be correlatable with its (attempted) audit event and never cached, like any other answer."""
    child = world.register("clinic_a")
    headers = world.h("clinic_a")
    with audit_insert_fails(runtime):
        r = world.client.get(f"/api/v1/patients/{child['id']}", headers=headers)
    _assert_failed_closed(r, _values(child))
    assert r.headers.get("X-Request-ID") == r.json().get("request_id"), "5xx response has no X-Request-ID header"
    assert r.headers.get("Cache-Control") == "no-store", "5xx response lacks Cache-Control: no-store"


def test_registration_is_not_made_when_its_audit_event_cannot_be_written(world, runtime):
    headers = world.h("clinic_a")
    body = new_child()
    patients, index = _count(runtime, Patient), _count(runtime, PatientIdentifierIndex)
    with audit_insert_fails(runtime):
        r = world.client.post("/api/v1/patients", json=body, headers=headers)
        _assert_failed_closed(r, [body["given_name"], body["bform"]])
    assert _count(runtime, Patient) == patients, "a patient row was committed without its audit event"
    assert _count(runtime, PatientIdentifierIndex) == index, "blind-index rows were committed without an audit event"
    # and the same registration goes through once the audit log is back
    assert world.client.post("/api/v1/patients", json=body, headers=headers).status_code == 201


def test_dose_is_not_recorded_when_its_audit_event_cannot_be_written(world, runtime):
    child = world.register("clinic_a")
    headers = world.h("clinic_a")
    doses = _count(runtime, Immunization)
    with audit_insert_fails(runtime):
        r = world.client.post(f"/api/v1/patients/{child['id']}/immunizations", json=BCG, headers=headers)
        _assert_failed_closed(r, _values(child))
    assert _count(runtime, Immunization) == doses, "a dose was committed without its audit event"
    assert _count(runtime, Immunization, patient_id=uuid.UUID(child["id"])) == 0


def test_update_is_not_made_when_its_audit_event_cannot_be_written(world, runtime):
    child = world.register("clinic_a")
    headers = world.h("clinic_a", **{"If-Match": '"1"'})
    with audit_insert_fails(runtime):
        r = world.client.patch(f"/api/v1/patients/{child['id']}", json={"family_name": "Durrani"}, headers=headers)
        _assert_failed_closed(r, _values(child))
    r = world.client.get(f"/api/v1/patients/{child['id']}", headers=world.h("clinic_a"))
    unchanged = r.json()["version"] == 1 and r.json()["family_name"] == child["family_name"]
    assert unchanged, "the update was committed"


def test_failure_at_commit_is_not_answered_with_the_data(world, runtime):
    if not is_postgres(runtime):
        pytest.skip("needs a deferred constraint trigger (commit-time failure), which only PostgreSQL has")
    child = world.register("clinic_a")
    headers = world.h("clinic_a")
    with audit_insert_fails(runtime, at_commit=True):
        r = world.client.get(f"/api/v1/patients/{child['id']}", headers=headers)
        _assert_failed_closed(r, _values(child))
        body = new_child()
        patients = _count(runtime, Patient)
        r = world.client.post("/api/v1/patients", json=body, headers=headers)
        _assert_failed_closed(r, [body["given_name"], body["bform"]])
        assert _count(runtime, Patient) == patients


# --- a route that forgets to audit fails closed -----------------------------------------------------

def test_route_that_forgets_to_audit_fails_closed(world, runtime):
    child = world.register("clinic_a")
    secret = child["_input"]["given_name"]
    app = create_app(runtime.settings, runtime)

    @app.get("/api/v1/test-only/forgetful/{patient_id}")
    def forgetful(patient_id: uuid.UUID, ctx: Annotated[ServiceContext, Depends(require(Permission.PATIENT_READ))]):
        return {"given_name": secret}  # reads "patient data" and writes no audit event

    with TestClient(app, raise_server_exceptions=False) as c:
        before = count_events(runtime)
        r = c.get(f"/api/v1/test-only/forgetful/{child['id']}", headers=world.h("clinic_a"))
        after = count_events(runtime)
    assert r.status_code == 500, f"status {r.status_code}: a route without an audit event answered"
    assert (secret in r.text) is False, "the route's data was sent"
    assert r.headers["content-type"].startswith("application/problem+json")
    events = audit_events(runtime, request_id=r.json()["request_id"])
    assert after - before == 1 and len(events) == 1, "the failed attempt should still be on record"
    assert (events[0].action, events[0].outcome) == ("patient.read", "error")
    assert events[0].detail.get("reason") == "AuditMissing"


# --- audit events hold no patient values ------------------------------------------------------------

def test_audit_events_never_contain_patient_values(world, runtime):
    c, h = world.client, world.h
    child = world.register("clinic_a")
    pid, values = child["id"], _values(child)
    rids = []

    def go(method, url, who="clinic_a", **kw):
        r = c.request(method, url, headers=h(who, **kw.pop("headers", {})), **kw)
        rids.append(r.headers["X-Request-ID"])
        return r

    go("GET", f"/api/v1/patients/{pid}")
    go("GET", f"/api/v1/patients/{pid}", who="clinic_c")
    go("GET", "/api/v1/patients?limit=100")
    for who in ("clinic_a", "clinic_c", "official_other_province"):
        go("POST", "/api/v1/patients/search", who=who, json={"system": "bform", "value": child["bform"]})
        go("POST", "/api/v1/patients/search", who=who, json={"system": "cnic", "value": child["_input"]["guardian"]["cnic"]})
        go("POST", "/api/v1/patients/search", who=who, json={"system": "nhr", "value": child["health_id"]})
    go("POST", "/api/v1/patients", json=new_child(bform=child["bform"]), who="clinic_c")  # 409 duplicate
    go("POST", "/api/v1/patients", json={**child["_input"], "phone": child["_input"]["address"]})  # 422
    go("PATCH", f"/api/v1/patients/{pid}", json={"family_name": child["_input"]["family_name"] + "x"}, headers={"If-Match": '"1"'})
    go("PATCH", f"/api/v1/patients/{pid}", json={"bform": child["bform"]}, headers={"If-Match": '"1"'})  # 412
    dose = go("POST", f"/api/v1/patients/{pid}/immunizations", json=BCG).json()
    go("POST", f"/api/v1/immunizations/{dose['id']}/void", json={"reason": f"wrong child {values[0]}"}, headers={"If-Match": '"1"'})
    go("GET", f"/api/v1/patients/{pid}/immunizations")

    with runtime.sessions() as s:
        t = text("SELECT * FROM audit_events")
        rows = [r for r in s.execute(t).mappings().all()
                if r["request_id"] in set(rids) or str(r["patient_id"] or "").replace("-", "") == pid.replace("-", "")]
        subjects = s.execute(text("SELECT * FROM audit_event_subjects")).mappings().all()
    assert len(rows) >= len(rids), "some requests left no audit event"
    dump = "\n".join(json.dumps({k: (v.hex() if isinstance(v, bytes) else str(v)) for k, v in r.items()}) for r in rows)
    dump += "\n".join(str(dict(r)) for r in subjects)
    leaked = [i for i, v in enumerate(values) if v in dump]
    assert not leaked, f"patient values #{leaked} are stored in audit events"
