"""Errors are RFC 9457 problems that name the field and never echo the value (DESIGN 4, 8);
versions make a stale write a 412, never a silent overwrite (invariant 7); an error leaves
nothing half-written; doses are voided or corrected, never deleted."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select, text

from conftest import new_child, new_uuid
from registry.patients.models import Patient, PatientIdentifierIndex

MARK = "Qz9Marker"  # a distinctive submitted string that must never come back
RID = {"X-Request-ID": "errtest-fixed-0000"}  # fixed, so a random request id cannot contain a marker
BCG = {"vaccine": "BCG", "dose_number": 1, "date_given": "2026-06-02"}
FUTURE = (date.today() + timedelta(days=400)).isoformat()


def _problem(r, status: int) -> dict:
    assert r.status_code == status, f"status {r.status_code}, expected {status}"
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers["content-type"]
    body = r.json()
    assert body["status"] == status and body["type"].startswith("urn:nhr:problem:") and body["title"]
    for leak in ("Traceback", 'File "', ".py", "/work/", "site-packages", "sqlalchemy", "pydantic.dev"):
        assert leak not in r.text, f"error body contains {leak!r}"
    return body


def _fields(body: dict) -> dict[str, dict]:
    return {e["field"]: e for e in body.get("errors", [])}


def _child_without(key):
    b = new_child()
    del b[key]
    return b


# (name, method, url template, body or raw content, field expected, pointer expected or None, distinctive submitted string)
MALFORMED = [
    ("missing-given-name", "POST", "/api/v1/patients", lambda p: _child_without("given_name"), "given_name", "#/given_name", None),
    ("bad-sex", "POST", "/api/v1/patients", lambda p: new_child(sex=f"zebra{MARK}"), "sex", "#/sex", MARK),
    ("future-birth-date", "POST", "/api/v1/patients", lambda p: new_child(birth_date=FUTURE), "birth_date", "#/birth_date", FUTURE),
    ("bad-bform", "POST", "/api/v1/patients", lambda p: new_child(bform=f"35202-{MARK}-1"), "bform", "#/bform", MARK),
    ("bad-bform-digits", "POST", "/api/v1/patients", lambda p: new_child(bform="98765-432109"), "bform", "#/bform", "98765-432109"),
    ("bad-guardian-cnic", "POST", "/api/v1/patients",
     lambda p: new_child(guardian={"name": "Mehrunnisa", "relationship": "mother", "cnic": "8765-4321098-76"}),
     "guardian.cnic", "#/guardian/cnic", "8765-4321098-76"),
    ("bad-phone", "POST", "/api/v1/patients", lambda p: new_child(phone="0333-98712"), "phone", "#/phone", "0333-98712"),
    ("unknown-field", "POST", "/api/v1/patients", lambda p: new_child(favourite_colour=f"teal{MARK}"), "favourite_colour",
     "#/favourite_colour", MARK),
    ("wrong-json-type", "POST", "/api/v1/patients", lambda p: new_child(given_name=[f"Zar{MARK}"]), "given_name", "#/given_name", MARK),
    ("bad-vaccine", "POST", "/api/v1/patients/{pid}/immunizations", lambda p: {**BCG, "vaccine": f"VAX{MARK}"}, "vaccine", "#/vaccine", MARK),
    ("dose-number-schema-range", "POST", "/api/v1/patients/{pid}/immunizations", lambda p: {**BCG, "dose_number": 98765},
     "dose_number", "#/dose_number", "98765"),
    ("dose-number-vaccine-range", "POST", "/api/v1/patients/{pid}/immunizations", lambda p: {**BCG, "dose_number": 7},
     "dose_number", "#/dose_number", None),
    ("date-given-before-birth", "POST", "/api/v1/patients/{pid}/immunizations", lambda p: {**BCG, "date_given": "2026-05-17"},
     "date_given", "#/date_given", "2026-05-17"),
    ("patch-bad-phone", "PATCH", "/api/v1/patients/{pid}", lambda p: {"phone": f"call-{MARK}"}, "phone", "#/phone", MARK),
]


@pytest.mark.parametrize("case", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_input_is_a_422_naming_the_field(case, shared_world):
    name, method, url, make, field, pointer, submitted = case
    w = shared_world
    p = w.register("clinic_a") if "{pid}" in url else None
    headers = w.h("clinic_a", **RID, **({"If-Match": '"1"'} if method == "PATCH" else {}))
    r = w.client.request(method, url.format(pid=p and p["id"]), json=make(p), headers=headers)
    body = _problem(r, 422)
    errors = _fields(body)
    assert field in errors, f"{name}: problem names {sorted(errors)} instead of {field}"
    assert errors[field].get("pointer") == pointer
    assert errors[field].get("detail"), "the broken rule is not explained"
    if submitted:
        assert submitted not in r.text, f"{name}: the submitted value is echoed"


def test_invalid_json_body(shared_world):
    w = shared_world
    raw = '{"given_name": "Zar' + MARK + '", "sex": '
    r = w.client.post("/api/v1/patients", content=raw, headers=w.h("clinic_a", **RID, **{"Content-Type": "application/json"}))
    body = _problem(r, 422)
    assert MARK not in r.text, "the submitted body is echoed"
    errors = body.get("errors") or []
    assert errors and errors[0].get("detail"), "an unparseable body should still be explained"
    # the body as a whole is wrong: not a member named after the character offset ("#/15")
    assert [e["field"] for e in errors] == ["body"], f"invalid JSON is reported on {[e['field'] for e in errors]}"


@pytest.mark.parametrize("url,field,where,submitted", [
    ("/api/v1/patients/35202-{m}-1", "patient_id", "path", MARK),
    ("/api/v1/patients?limit=98765", "limit", "query", "98765"),
    ("/api/v1/patients?limit=0", "limit", "query", None),
    ("/api/v1/patients?cursor=eyJ{m}tampered", "cursor", None, MARK),
    ("/api/v1/patients?cursor=WyIyMDI2LTAxLTAxIiwgIm5vdC1hLXV1aWQiXQ", "cursor", None, None),  # valid base64 JSON, bad id
], ids=["bad-uuid-in-path", "limit-over-max", "limit-zero", "tampered-cursor", "cursor-bad-id"])
def test_bad_path_or_query_is_a_422_naming_the_parameter(url, field, where, submitted, shared_world):
    w = shared_world
    r = w.client.get(url.format(m=MARK), headers=w.h("clinic_a", **RID))
    body = _problem(r, 422)
    errors = _fields(body)
    assert field in errors, f"problem names {sorted(errors)} instead of {field}"
    if where:
        assert errors[field]["in"] == where
    if submitted:
        assert submitted not in r.text, "the submitted value is echoed"


def test_unknown_route_and_wrong_method_are_problems(shared_world):
    w = shared_world
    r = w.client.get("/api/v1/no-such-thing", headers=RID)
    _problem(r, 404)
    p = w.register("clinic_a")
    r = w.client.delete(f"/api/v1/patients/{p['id']}", headers=w.h("clinic_a", **RID))
    _problem(r, 405)
    assert "allow" in {k.lower() for k in r.headers}, "405 should say which methods are allowed"


# --- versions ------------------------------------------------------------------------------------

def _patch(w, pid, body, if_match, who="clinic_a"):
    headers = w.h(who, **({"If-Match": if_match} if if_match is not None else {}))
    return w.client.patch(f"/api/v1/patients/{pid}", json=body, headers=headers)


def test_if_match_rules_and_etag_increments(shared_world):
    w = shared_world
    p = w.register("clinic_a")
    pid = p["id"]
    r = w.client.get(f"/api/v1/patients/{pid}", headers=w.h("clinic_a"))
    assert r.headers["ETag"] == '"1"'
    body = _problem(_patch(w, pid, {"family_name": "Durrani"}, None), 428)
    assert "If-Match" in _fields(body)
    _problem(_patch(w, pid, {"family_name": "Durrani"}, '"2"'), 412)
    _problem(_patch(w, pid, {"family_name": "Durrani"}, '"not-a-version"'), 412)
    r = _patch(w, pid, {"family_name": "Durrani"}, '"1"')
    assert r.status_code == 200, r.status_code
    assert r.headers["ETag"] == '"2"' and r.json()["version"] == 2
    r = _patch(w, pid, {"family_name": "Durranii"}, 'W/"2"')
    assert r.status_code == 200 and r.headers["ETag"] == '"3"'
    assert w.client.get(f"/api/v1/patients/{pid}", headers=w.h("clinic_a")).headers["ETag"] == '"3"'


def test_concurrent_editors_second_gets_412_and_first_change_is_kept(shared_world):
    w = shared_world
    p = w.register("clinic_a")
    pid = p["id"]
    etag_a = w.client.get(f"/api/v1/patients/{pid}", headers=w.h("clinic_a")).headers["ETag"]
    etag_b = w.client.get(f"/api/v1/patients/{pid}", headers=w.h("official_district")).headers["ETag"]
    assert etag_a == etag_b
    first = _patch(w, pid, {"family_name": "FirstEditor"}, etag_a)
    assert first.status_code == 200
    second = _patch(w, pid, {"family_name": "SecondEditor", "phone": "0300-1234567"}, etag_b)
    _problem(second, 412)
    now = w.client.get(f"/api/v1/patients/{pid}", headers=w.h("clinic_a")).json()
    assert now["family_name"] == "FirstEditor", "the first editor's change was overwritten"
    assert now["phone"] == first.json()["phone"] and now["version"] == 2


# --- nothing half-written ----------------------------------------------------------------------------

def _raw(runtime, pid: str):
    u = uuid.UUID(pid)
    with runtime.sessions() as s:
        row = s.execute(select(Patient.__table__).where(Patient.__table__.c.id == u)).one()
        idx = s.execute(select(PatientIdentifierIndex.__table__).where(PatientIdentifierIndex.__table__.c.patient_id == u)
                        .order_by(PatientIdentifierIndex.__table__.c.column)).all()
    return tuple(row), [tuple(i) for i in idx]


def _count(runtime, model) -> int:
    with runtime.sessions() as s:
        return s.execute(select(func.count()).select_from(model)).scalar_one()


def test_failed_patch_leaves_row_and_blind_index_unchanged(world, runtime):
    p = world.register("clinic_a")
    other = world.register("clinic_a")
    pid = p["id"]
    before = _raw(runtime, pid)
    attempts = [
        ({"bform": "not-a-bform", "given_name": "Changed"}, '"1"', 422),  # schema
        ({"district": "PK-XX-NOWHERE", "bform": "11111-2222222-3"}, '"1"', 422),  # domain, after parsing
        ({"bform": other["bform"], "given_name": "Changed"}, '"1"', 409),  # duplicate of another patient
        ({"bform": "11111-2222222-3", "given_name": "Changed"}, '"9"', 412),
        ({"bform": "11111-2222222-3", "given_name": "Changed"}, None, 428),
        ({"given_name": None, "bform": "11111-2222222-3"}, '"1"', 422),
    ]
    for i, (body, if_match, status) in enumerate(attempts):
        r = _patch(world, pid, body, if_match)
        assert r.status_code == status, f"attempt #{i}: status {r.status_code}, expected {status}"
        assert _raw(runtime, pid) == before, f"attempt #{i} changed the stored row or its blind-index rows"
    found = world.client.post("/api/v1/patients/search", json={"system": "bform", "value": "11111-2222222-3"}, headers=world.h("clinic_a"))
    assert pid not in {x["id"] for x in found.json()}


def test_duplicate_registration_from_another_province_changes_nothing(world, runtime):
    p = world.register("clinic_a")
    patients, index = _count(runtime, Patient), _count(runtime, PatientIdentifierIndex)
    dup = new_child(bform=p["bform"].replace("-", ""))  # same number, written without dashes
    r = world.client.post("/api/v1/patients", json=dup, headers=world.h("clinic_c"))
    body = _problem(r, 409)
    assert "bform" in _fields(body), f"409 names {sorted(_fields(body))} instead of bform"
    assert body["errors"][0]["pointer"] == "#/bform"
    echoed = dup["given_name"] in r.text or p["bform"] in r.text
    assert not echoed, "the 409 echoes the submitted patient"
    assert (_count(runtime, Patient), _count(runtime, PatientIdentifierIndex)) == (patients, index), "something was written"


# --- void and correct ----------------------------------------------------------------------------

def _record(w, pid, **over):
    r = w.client.post(f"/api/v1/patients/{pid}/immunizations", json={**BCG, **over}, headers=w.h("clinic_a"))
    assert r.status_code == 201, r.status_code
    assert r.headers["ETag"] == '"1"'
    return r.json()


def _amend(w, dose_id, verb, body, if_match='"1"', who="clinic_a"):
    return w.client.post(f"/api/v1/immunizations/{dose_id}/{verb}", json=body, headers=w.h(who, **{"If-Match": if_match}))


def _doses(w, pid):
    r = w.client.get(f"/api/v1/patients/{pid}/immunizations", headers=w.h("clinic_a"))
    assert r.status_code == 200
    return {d["id"]: d for d in r.json()}


def test_void_keeps_the_dose_and_cannot_be_repeated(shared_world):
    w = shared_world
    pid = w.register("clinic_a")["id"]
    dose = _record(w, pid)
    r = _amend(w, dose["id"], "void", {"reason": "recorded on the wrong child"})
    assert r.status_code == 200, r.status_code
    assert r.json()["status"] == "entered-in-error" and r.json()["status_reason"] == "recorded on the wrong child"
    listed = _doses(w, pid)
    assert dose["id"] in listed, "a voided dose must stay listed, never deleted"
    assert listed[dose["id"]]["status"] == "entered-in-error"
    _problem(_amend(w, dose["id"], "void", {"reason": "again"}), 412)
    _problem(_amend(w, dose["id"], "void", {"reason": "again"}, if_match='"2"'), 412)  # already amended
    body = _problem(_amend(w, dose["id"], "void", {}), 422)
    assert "reason" in _fields(body)
    assert _doses(w, pid)[dose["id"]]["status"] == "entered-in-error"


def test_correct_supersedes_the_old_dose(shared_world):
    w = shared_world
    pid = w.register("clinic_a")["id"]
    dose = _record(w, pid, vaccine="OPV", dose_number=0)
    body = _problem(_amend(w, dose["id"], "correct", {"dose_number": 1}), 422)
    assert "reason" in _fields(body)
    _problem(_amend(w, dose["id"], "correct", {"dose_number": 1, "reason": "typo"}, if_match='"3"'), 412)
    # OPV-1 from 6 weeks of age (the schedule refuses it earlier: test_dose_validation.py)
    r = _amend(w, dose["id"], "correct", {"dose_number": 1, "date_given": "2026-07-13", "reason": "typo in dose number"})
    assert r.status_code == 201, r.status_code
    new = r.json()
    assert new["id"] != dose["id"] and new["supersedes_id"] == dose["id"] and new["status"] == "completed"
    assert (new["vaccine"], new["dose_number"], new["date_given"]) == ("OPV", 1, "2026-07-13")
    listed = _doses(w, pid)
    assert listed[dose["id"]]["status"] == "superseded" and listed[new["id"]]["status"] == "completed"
    # the superseded dose cannot be corrected or voided again
    _problem(_amend(w, dose["id"], "correct", {"dose_number": 2, "reason": "again"}, if_match='"2"'), 412)
    _problem(_amend(w, dose["id"], "void", {"reason": "again"}, if_match='"2"'), 412)
    # a correction that breaks a rule changes nothing
    body = _problem(_amend(w, new["id"], "correct", {"date_given": "2026-05-01", "reason": "before birth"}), 422)
    assert "date_given" in _fields(body)
    assert _doses(w, pid)[new["id"]]["status"] == "completed"


def test_nonexistent_and_unknown_ids_are_404(shared_world):
    w = shared_world
    _problem(w.client.get(f"/api/v1/patients/{new_uuid()}", headers=w.h("clinic_a")), 404)
    _problem(_amend(w, new_uuid(), "void", {"reason": "nothing"}), 404)


def test_raw_sql_shows_no_deleted_doses(shared_world, runtime):
    """Voiding and correcting never delete: the row count for the patient only grows."""
    w = shared_world
    pid = w.register("clinic_a")["id"]
    d1, d2 = _record(w, pid), _record(w, pid, vaccine="OPV", dose_number=0)
    assert _amend(w, d1["id"], "void", {"reason": "wrong child"}).status_code == 200
    assert _amend(w, d2["id"], "correct", {"dose_number": 1, "date_given": "2026-07-13", "reason": "typo"}).status_code == 201
    with runtime.sessions() as s:
        n = s.execute(text("SELECT count(*) FROM immunizations WHERE patient_id = :p"),
                      {"p": uuid.UUID(pid) if runtime.engine.dialect.name == "postgresql" else uuid.UUID(pid).hex}).scalar_one()
    assert n == 3
