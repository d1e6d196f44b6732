"""The citizen's access report (issue 3): access codes issued at registration and shown once,
citizen login (throttled, audited, indistinguishable failures), the guardian's view of the
child's record, doses and access log, and reissuing a lost code."""

from __future__ import annotations

import re
import uuid

import pytest
from sqlalchemy import select

from api.deps import declared_access, iter_api_routes
from conftest import audit_events, count_events
from registry.citizens import codes
from registry.citizens.models import PatientAccessCode
from registry.patients import repository as patient_repo
from security import tokens
from security.access.permissions import CITIZEN_ROLE, ROLE_PERMISSIONS
from security.access.principal import Principal, Scope

CODE_FORMAT = re.compile(r"^[23456789ABCDEFGHJKMNPQRSTUVWXYZ]{4}-[23456789ABCDEFGHJKMNPQRSTUVWXYZ]{4}-[23456789ABCDEFGHJKMNPQRSTUVWXYZ]{3}$")
EMERGENCY = {"X-Break-Glass-Reason": "unconscious child at DHQ emergency"}


def login(client, health_id: str, code: str, *, form: bool = False):
    body = {"health_id": health_id, "access_code": code}
    return client.post("/api/v1/citizen/token", **({"data": body} if form else {"json": body}))


def citizen_headers(client, child: dict) -> dict:
    r = login(client, child["health_id"], child["access_code"])
    assert r.status_code == 200, r.json()
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def wrong_code(code: str) -> str:
    """A well-formed code (valid check character) that is not `code`."""
    while True:
        other = codes.generate()
        if other != code:
            return other


# --- the code: issued at registration, shown once, stored hashed -------------------------------------

def test_code_format_check_character_and_entropy():
    code = codes.generate()
    assert CODE_FORMAT.match(code)
    assert codes.ENTROPY_BITS > 49
    compact = codes.normalise(code)
    assert codes.normalise(code.lower().replace("-", " ")) == compact
    typo = compact[:3] + ("2" if compact[3] != "2" else "3") + compact[4:]
    assert codes.normalise(typo) is None
    swapped = next((compact[:i] + compact[i + 1] + compact[i] + compact[i + 2:]
                    for i in range(len(compact) - 1) if compact[i] != compact[i + 1]))
    assert codes.normalise(swapped) is None


def test_registration_shows_the_code_once_and_it_is_never_retrievable(world, runtime):
    c = world.client
    child = world.register("clinic_a")
    code = child["access_code"]
    assert CODE_FORMAT.match(code)
    [ev] = audit_events(runtime, action="patient.create", resource_id=child["id"])
    assert ev.outcome == "success" and ev.detail == {"access_code_issued": True}
    compact = codes.normalise(code)
    reads = [c.get(f"/api/v1/patients/{child['id']}", headers=world.h("clinic_a")),
             c.get("/api/v1/patients?limit=100", headers=world.h("clinic_a")),
             c.post("/api/v1/patients/search", json={"system": "nhr", "value": child["health_id"]}, headers=world.h("clinic_a")),
             c.get("/api/v1/citizen/me", headers=citizen_headers(c, child))]
    for r in reads:
        assert r.status_code == 200
        assert "access_code" not in r.text and code not in r.text and compact not in r.text
    with runtime.sessions() as s:
        stored = s.execute(select(PatientAccessCode).where(PatientAccessCode.patient_id == uuid.UUID(child["id"]))).scalar_one()
        assert stored.code_hash.startswith("$argon2id$") and stored.generation == 1
        assert runtime.hasher.verify(compact, stored.code_hash)


def test_raw_database_does_not_contain_the_code(world, runtime):
    from test_encryption_at_rest import scan_db

    child = world.register("clinic_a")
    login(world.client, child["health_id"], child["access_code"])
    login(world.client, child["health_id"], wrong_code(child["access_code"]))
    code = child["access_code"]
    found = scan_db(runtime, runtime.settings.database_url, [("code", code), ("compact", codes.normalise(code))])
    assert not found, found


# --- login ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("form", [False, True])
def test_login_with_health_id_and_code_issues_a_short_lived_citizen_token(world, runtime, form):
    child = world.register("clinic_a")
    r = login(world.client, child["health_id"], child["access_code"].lower().replace("-", ""), form=form)
    assert r.status_code == 200, r.json()
    assert r.headers["cache-control"] == "no-store"
    claims = tokens.verify(runtime.tokens, r.json()["access_token"])
    assert (claims["role"], claims["scope_level"], claims["scope_code"], claims["gen"]) == (
        "citizen", "patient", uuid.UUID(child["id"]).hex, 1)
    assert claims["exp"] - claims["iat"] == runtime.settings.citizen.token_ttl_seconds <= 900
    [ev] = audit_events(runtime, request_id=r.headers["X-Request-ID"])
    assert (ev.action, ev.outcome, ev.actor_role, str(ev.patient_id), ev.purpose_of_use) == (
        "citizen.login", "success", "citizen", child["id"], "PATRQT")


def test_unknown_health_id_and_wrong_code_are_indistinguishable(world, runtime, monkeypatch):
    child = world.register("clinic_a")
    other = world.register("clinic_a")
    calls = []
    hasher = runtime.code_hasher  # access codes have their own (cheap) argon2id setting
    real_verify, real_dummy = hasher.verify, hasher.verify_dummy
    monkeypatch.setattr(hasher, "verify", lambda *a: calls.append("verify") or real_verify(*a))
    monkeypatch.setattr(hasher, "verify_dummy", lambda *a: calls.append("dummy") or real_dummy(*a))
    unknown_id = other["health_id"][:-1] + str((int(other["health_id"][-1]) + 1) % 10)  # fails the check digit
    attempts = {
        "wrong code": login(world.client, child["health_id"], wrong_code(child["access_code"])),
        "unknown health id": login(world.client, unknown_id, child["access_code"]),
        "other child's code": login(world.client, child["health_id"], other["access_code"]),
        "malformed code": login(world.client, child["health_id"], "not-a-code"),
    }
    shapes = {k: (r.status_code, r.json()["type"], r.json()["detail"]) for k, r in attempts.items()}
    assert len(set(shapes.values())) == 1, shapes
    assert next(iter(shapes.values()))[0] == 401
    assert len(calls) == len(attempts), calls  # every failure spends exactly one argon2id verification
    for r in attempts.values():
        [ev] = audit_events(runtime, request_id=r.headers["X-Request-ID"])
        assert (ev.action, ev.outcome) == ("citizen.login", "unauthenticated")
        text = str(ev.detail)
        assert child["health_id"] not in text and child["health_id"].replace("-", "") not in text
        assert codes.normalise(child["access_code"]) not in text


def test_login_is_throttled_per_health_id_and_the_count_survives_rollback(world, runtime):
    child = world.register("clinic_a")
    limit = runtime.settings.login.max_failures_per_pair
    for _ in range(limit):
        assert login(world.client, child["health_id"], wrong_code(child["access_code"])).status_code == 401
    r = login(world.client, child["health_id"], child["access_code"])  # even the right code, once throttled
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) == runtime.settings.login.window_seconds
    [ev] = audit_events(runtime, request_id=r.headers["X-Request-ID"])
    assert (ev.action, ev.outcome, ev.detail["reason"]) == ("citizen.login", "denied", "throttled")
    # another child's login is not affected, and staff login budgets are separate
    other = world.register("clinic_a")
    assert login(world.client, other["health_id"], other["access_code"]).status_code == 200


def test_login_is_throttled_per_client(world, runtime, monkeypatch):
    children = [world.register("clinic_a") for _ in range(2)]  # before the limits change: staff login shares them
    monkeypatch.setattr(runtime.settings.login, "max_failures_per_client", 3)
    monkeypatch.setattr(runtime.settings.login, "max_failures_per_account", 1000)
    from security import throttle
    from sqlalchemy import delete
    key = throttle.throttle_key("citizen-client", "testclient")
    with runtime.sessions.begin() as s:  # start from a clean per-client count for this test
        s.execute(delete(throttle.LoginFailureRow.__table__).where(throttle.LoginFailureRow.key == key))
    for i in range(3):
        assert login(world.client, children[i % 2]["health_id"], wrong_code("")).status_code == 401
    assert login(world.client, children[1]["health_id"], children[1]["access_code"]).status_code == 429
    with runtime.sessions.begin() as s:
        s.execute(delete(throttle.LoginFailureRow.__table__).where(throttle.LoginFailureRow.key == key))


# --- the citizen view -------------------------------------------------------------------------------

def test_citizen_sees_the_childs_record_and_doses_with_voided_ones_marked(world, runtime):
    c = world.client
    child = world.register("clinic_a")
    pid = child["id"]
    dose = c.post(f"/api/v1/patients/{pid}/immunizations", json={"vaccine": "BCG", "dose_number": 1, "date_given": "2026-06-02"},
                  headers=world.h("clinic_a")).json()
    c.post(f"/api/v1/patients/{pid}/immunizations", json={"vaccine": "OPV", "dose_number": 0, "date_given": "2026-06-02"},
           headers=world.h("clinic_a"))
    r = c.post(f"/api/v1/immunizations/{dose['id']}/void", json={"reason": "entered for the wrong child"},
               headers=world.h("clinic_a", **{"If-Match": '"1"'}))
    assert r.status_code == 200, r.json()
    h = citizen_headers(c, child)
    me = c.get("/api/v1/citizen/me", headers=h)
    assert me.status_code == 200
    body = me.json()
    assert (body["health_id"], body["given_name"], body["family_name"], body["birth_date"], body["sex"]) == (
        child["health_id"], child["given_name"], child["family_name"], child["birth_date"], child["sex"])
    assert body["guardian_name"] == child["guardian"]["name"]
    assert body["home_facility"] == {"code": world.facilities["a"], "name": "Test facility a"}
    for withheld in ("phone", "address", "bform", "cnic"):
        assert withheld not in body
    doses = c.get("/api/v1/citizen/me/immunizations", headers=h).json()
    by_vaccine = {d["vaccine"]: d for d in doses}
    assert by_vaccine["BCG"]["voided"] is True and by_vaccine["BCG"]["status"] == "entered-in-error"
    assert by_vaccine["OPV"]["voided"] is False and by_vaccine["OPV"]["facility"]["name"] == "Test facility a"
    assert "entered for the wrong child" not in c.get("/api/v1/citizen/me/immunizations", headers=h).text


def _log(c, h, **params) -> list[dict]:
    r = c.get("/api/v1/citizen/me/access-log", headers=h, params={"limit": 100, **params})
    assert r.status_code == 200, r.json()
    return r.json()["items"]


def test_access_log_shows_staff_reads_with_place_role_purpose_and_emergency_but_no_names(world, runtime):
    c = world.client
    child = world.register("clinic_a")
    pid = child["id"]
    assert c.get(f"/api/v1/patients/{pid}", headers=world.h("clinic_a")).status_code == 200
    assert c.get(f"/api/v1/patients/{pid}", headers=world.h("official_district")).status_code == 200
    assert c.get(f"/api/v1/patients/{pid}", headers=world.h("official_other_province", **EMERGENCY)).status_code == 200
    h = citizen_headers(c, child)
    items = _log(c, h)
    reads = [e for e in items if e["action"] == "patient.read"]
    assert len(reads) == 3
    clinic = next(e for e in reads if e["role"] == "clinic_worker")
    assert clinic["facility"] == {"code": world.facilities["a"], "name": "Test facility a"} and clinic["office"] is None
    assert (clinic["purpose_of_use"], clinic["emergency"], clinic["outcome"]) == ("TREAT", False, "success")
    district = next(e for e in reads if e["role"] == "health_official" and not e["emergency"])
    assert district["office"]["code"] == "PK-PB-LAH" and district["office"]["name"] and district["facility"] is None
    assert district["purpose_of_use"] == "PUBHLTH"
    emergency = next(e for e in reads if e["emergency"])
    assert (emergency["office"]["code"], emergency["purpose_of_use"], emergency["outside_usual_scope"]) == (
        "PK-SD", "ETREAT", True)
    assert any(e["action"] == "patient.create" for e in items)
    assert any(e["action"] == "citizen.login" and e["role"] == "citizen" for e in items)
    assert all(e["staff_name"] is None for e in items)
    raw = c.get("/api/v1/citizen/me/access-log", headers=h).text
    for who in ("clinic_a", "official_district", "official_other_province"):
        assert world.users[who] not in raw, f"{who}'s username shown"
    assert "unconscious" not in raw  # the break-glass reason is for auditors


def test_staff_names_are_shown_only_when_the_setting_is_on(world, runtime, monkeypatch):
    c = world.client
    child = world.register("clinic_a")
    assert c.get(f"/api/v1/patients/{child['id']}", headers=world.h("official_district")).status_code == 200
    h = citizen_headers(c, child)
    assert all(e["staff_name"] is None for e in _log(c, h))
    monkeypatch.setattr(runtime.settings.citizen, "show_staff_names", True)
    named = {e["staff_name"] for e in _log(c, h) if e["action"] == "patient.read"}
    assert named == {"official_district"}  # the display name given in the World fixture


def test_access_log_is_paginated_and_leaves_own_views_out_unless_asked(world, runtime):
    c = world.client
    child = world.register("clinic_a")
    for _ in range(3):
        c.get(f"/api/v1/patients/{child['id']}", headers=world.h("clinic_a"))
    h = citizen_headers(c, child)
    c.get("/api/v1/citizen/me", headers=h)
    everything = _log(c, h)
    assert not [e for e in everything if e["action"].startswith("citizen.") and e["action"] != "citizen.login"]
    pages, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = c.get("/api/v1/citizen/me/access-log", headers=h, params=params).json()
        pages.extend(body["items"])
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert [(e["occurred_at"], e["action"]) for e in pages] == [(e["occurred_at"], e["action"]) for e in everything]
    own = _log(c, h, include_own_views="true")
    assert any(e["action"] == "citizen.read" for e in own)
    assert c.get("/api/v1/citizen/me/access-log", headers=h, params={"cursor": "garbage"}).status_code == 422


@pytest.mark.parametrize("path,action", [("/api/v1/citizen/me", "citizen.read"),
                                         ("/api/v1/citizen/me/immunizations", "citizen.immunizations"),
                                         ("/api/v1/citizen/me/access-log", "citizen.access_log")])
def test_each_citizen_request_writes_exactly_one_event(world, runtime, path, action):
    c = world.client
    child = world.register("clinic_a")
    h = citizen_headers(c, child)
    before = count_events(runtime)
    r = c.get(path, headers=h)
    assert r.status_code == 200
    assert count_events(runtime) == before + 1
    [ev] = audit_events(runtime, request_id=r.headers["X-Request-ID"])
    assert (ev.action, ev.outcome, ev.actor_role, str(ev.patient_id), ev.purpose_of_use) == (
        action, "success", "citizen", child["id"], "PATRQT")
    r = c.get(path)  # no token: refused, and the refusal is one event too
    assert r.status_code == 401
    [ev] = audit_events(runtime, request_id=r.headers["X-Request-ID"])
    assert (ev.action, ev.outcome) == (action, "unauthenticated")


# --- the citizen can never reach another patient ------------------------------------------------------

def test_citizen_cannot_reach_another_patient(world, runtime):
    c = world.client
    mine, theirs = world.register("clinic_a"), world.register("clinic_a")
    h = citizen_headers(c, mine)
    assert c.get(f"/api/v1/patients/{theirs['id']}", headers=h).status_code == 403
    assert c.get(f"/api/v1/patients/{theirs['id']}/immunizations", headers=h).status_code == 403
    # the patient comes from the token: nothing in the URL can change it
    r = c.get("/api/v1/citizen/me", headers=h, params={"patient_id": theirs["id"]})
    assert r.json()["health_id"] == mine["health_id"]
    assert theirs["given_name"] not in c.get("/api/v1/citizen/me/access-log", headers=h).text
    # a token edited to name the other patient fails its signature
    token = h["Authorization"].split()[1]
    header, payload, sig = token.split(".")
    import base64
    import json
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["scope_code"] = claims["sub"] = theirs["id"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    r = c.get("/api/v1/citizen/me", headers={"Authorization": f"Bearer {header}.{forged}.{sig}"})
    assert r.status_code == 401
    # staff scope rules treat a patient-level scope as nothing at all (fail closed)
    citizen = Principal.build(uuid.UUID(mine["id"]), CITIZEN_ROLE, CITIZEN_ROLE, Scope("patient", uuid.UUID(mine["id"]).hex))
    with runtime.sessions() as s:
        row, access = patient_repo.get(s, citizen, uuid.UUID(mine["id"]))
    assert row is not None and access is patient_repo.Access.NONE


def test_staff_tokens_cannot_use_the_citizen_view(world):
    for who in ("clinic_a", "official_national", "auditor", "admin"):
        assert world.client.get("/api/v1/citizen/me", headers=world.h(who)).status_code == 403, who


def _staff_routes(app):
    citizen_permissions = {str(p) for p in ROLE_PERMISSIONS[CITIZEN_ROLE]}
    rows = []
    for r in iter_api_routes(app.routes):
        access = declared_access(r)
        # console pages take a session cookie, not a bearer token: a guardian's session is refused
        # there in tests/test_console_guardian.py
        if access not in ("public", None) and access not in citizen_permissions and not r.path.startswith("/console"):
            rows.extend((m, r.path) for m in sorted(r.methods))
    return rows


def test_every_staff_route_answers_403_to_a_citizen_token(world, app):
    child = world.register("clinic_a")
    h = citizen_headers(world.client, child)
    routes = _staff_routes(app)
    assert len(routes) >= 10 and ("POST", "/api/v1/patients/{patient_id}/access-code") in routes
    wrong = []
    for method, path in routes:
        url = re.sub(r"\{[^}]+\}", child["id"], path)
        r = world.client.request(method, url, headers=h, **({"json": {}} if method in ("POST", "PATCH", "PUT") else {}))
        if r.status_code != 403:
            wrong.append((method, path, r.status_code))
    assert not wrong, wrong


# --- reissuing a lost code ---------------------------------------------------------------------------

def test_reissue_replaces_the_code_and_ends_old_sessions(world, runtime):
    c = world.client
    child = world.register("clinic_a")
    old_session = citizen_headers(c, child)
    r = c.post(f"/api/v1/patients/{child['id']}/access-code", headers=world.h("clinic_a"))
    assert r.status_code == 201, r.json()
    assert r.headers["cache-control"] == "no-store"
    new = r.json()
    assert CODE_FORMAT.match(new["access_code"]) and new["access_code"] != child["access_code"]
    assert new["generation"] == 2
    [ev] = audit_events(runtime, request_id=r.headers["X-Request-ID"])
    assert (ev.action, ev.outcome, str(ev.patient_id), ev.detail) == ("patient.access_code", "success", child["id"],
                                                                      {"generation": 2})
    assert new["access_code"] not in str(ev.detail)
    assert login(c, child["health_id"], child["access_code"]).status_code == 401
    assert c.get("/api/v1/citizen/me", headers=old_session).status_code == 401
    fresh = citizen_headers(c, {**child, "access_code": new["access_code"]})
    assert c.get("/api/v1/citizen/me", headers=fresh).status_code == 200
    log = _log(c, fresh)
    assert any(e["action"] == "patient.access_code" and e["role"] == "clinic_worker" for e in log)


def test_reissue_needs_capture_scope_and_the_clinic_role(world, runtime):
    c = world.client
    child = world.register("clinic_a")
    assert c.post(f"/api/v1/patients/{child['id']}/access-code", headers=world.h("clinic_c")).status_code == 404
    assert c.post(f"/api/v1/patients/{child['id']}/access-code", headers=world.h("official_district")).status_code == 403
    assert c.post(f"/api/v1/patients/{uuid.uuid4()}/access-code", headers=world.h("clinic_a")).status_code == 404
    assert login(c, child["health_id"], child["access_code"]).status_code == 200  # the code was not replaced
    events = audit_events(runtime, action="patient.access_code", patient_id=uuid.UUID(child["id"]))
    assert {e.outcome for e in events} == {"denied"}
