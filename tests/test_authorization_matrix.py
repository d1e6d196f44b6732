"""The authorization matrix: every role x scope relation x patient endpoint (DESIGN 3.6).

The subject is one patient registered by `clinic_a` (facility a, district Lahore, province
Punjab). For each (user, endpoint) the table says what must come back; every request must
leave exactly one audit event (found by its request id) whose outcome matches the answer, and
a refusal must not carry any of the patient's values. Failure messages name fields only.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from conftest import USERS, audit_events, drop_database, fresh_database_url, make_settings, new_uuid
from registry import bootstrap
from registry.runtime import Runtime

P = "/api/v1/patients"
DOSE = {"vaccine": "BCG", "dose_number": 1, "date_given": "2026-06-02"}
# Doses are validated when recorded (a second BCG is a refused duplicate): each clinic that may
# record on the subject (born 2026-06-01) records a different dose the schedule accepts.
DOSE_POST = {"clinic_a": {"vaccine": "OPV", "dose_number": 0, "date_given": "2026-06-02"},
             "clinic_a2": {"vaccine": "HEPB", "dose_number": 1, "date_given": "2026-06-02"},
             "clinic_b": {"vaccine": "PCV", "dose_number": 1, "date_given": "2026-07-13"},
             "clinic_c": {"vaccine": "ROTA", "dose_number": 1, "date_given": "2026-07-13"}}
FRESH = {"vaccine": "PENTA", "dose_number": 1, "date_given": "2026-07-13"}  # for void/correct, see _fresh_dose
REASON = "child collapsed at the gate, no record"
SEEN, HIDDEN = "seen", "hidden"  # 200, and the patient is (not) in the list / search result
ENDPOINTS = ("read", "list", "patch", "search_bform", "search_nhr", "search_cnic",
             "dose_post", "dose_get", "void", "correct")

_ALL_403 = (403,) * len(ENDPOINTS)
# 404: out of the caller's reach (capture scope; search scope for search and doses). 403: the
# role lacks the permission (officials: update, record, amend; auditor and admin: everything
# here), or, for void/correct, the dose was recorded by another facility.
#                          read list    patch search x3 (bform, nhr, guardian cnic)  dose_post dose_get void correct
MATRIX = {
    "clinic_a":                (200, SEEN,   200, SEEN,   SEEN,   SEEN,   201, 200, 200, 201),
    "clinic_a2":               (404, HIDDEN, 404, SEEN,   SEEN,   SEEN,   201, 200, 403, 403),
    "clinic_b":                (404, HIDDEN, 404, SEEN,   SEEN,   SEEN,   201, 200, 403, 403),
    "clinic_c":                (404, HIDDEN, 404, SEEN,   SEEN,   SEEN,   201, 200, 403, 403),
    "official_district":       (200, SEEN,   403, SEEN,   SEEN,   SEEN,   403, 200, 403, 403),
    "official_other_district": (404, HIDDEN, 403, HIDDEN, HIDDEN, HIDDEN, 403, 404, 403, 403),
    "official_province":       (200, SEEN,   403, SEEN,   SEEN,   SEEN,   403, 200, 403, 403),
    "official_other_province": (404, HIDDEN, 403, HIDDEN, HIDDEN, HIDDEN, 403, 404, 403, 403),
    "official_national":       (200, SEEN,   403, SEEN,   SEEN,   SEEN,   403, 200, 403, 403),
    "auditor": _ALL_403, "auditor_province": _ALL_403, "auditor_other_province": _ALL_403, "admin": _ALL_403,
    # data stewards read records only through their review queue (tests/test_linkage_steward.py)
    "steward_district": _ALL_403, "steward_province": _ALL_403, "steward_other_province": _ALL_403,
}
assert set(MATRIX) == set(USERS) and all(len(v) == len(ENDPOINTS) for v in MATRIX.values())
CAPTURE = {"clinic_a", "official_district", "official_province", "official_national"}
ROWS = [pytest.param(user, ep, cell, id=f"{user}-{ep}") for user, cells in MATRIX.items() for ep, cell in zip(ENDPOINTS, cells)]


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    """This module's own database (it overrides the session's `runtime`, `client` and so
    `shared_world`): an official's list spans every world in the database, and other modules
    deliberately leave rows there that fail to decrypt (integrity tests)."""
    tmp = tmp_path_factory.mktemp("authz")
    url = fresh_database_url(tmp, "authz")
    rt = Runtime.build(make_settings(url, tmp / "keyring"))
    bootstrap.init(rt)
    yield rt
    rt.engine.dispose()
    drop_database(url)


@pytest.fixture(scope="module")
def client(runtime):
    with TestClient(create_app(runtime.settings, runtime), raise_server_exceptions=False) as c:
        yield c


@dataclass
class Subject:
    """Its repr shows the id only, so a failing test never prints the patient's values."""

    pid: str
    created_at: datetime
    health_id: str = field(repr=False)
    bform: str = field(repr=False)
    guardian_cnic: str = field(repr=False)
    values: tuple[str, ...] = field(repr=False)  # everything identifying the patient: must never leak


@pytest.fixture(scope="module")
def subject(shared_world) -> Subject:
    child = shared_world.register("clinic_a")
    inp = child["_input"]
    values = (child["given_name"], child["family_name"], child["bform"], child["bform"].replace("-", ""),
              child["health_id"], child["phone"], inp["phone"], child["address"],
              inp["guardian"]["name"], inp["guardian"]["cnic"], inp["guardian"]["cnic"].replace("-", ""))
    r = shared_world.client.post(f"{P}/{child['id']}/immunizations", json=DOSE, headers=shared_world.h("clinic_a"))
    assert r.status_code == 201
    return Subject(child["id"], _ts(child["created_at"]), child["health_id"], child["bform"], inp["guardian"]["cnic"], values)


def _ts(s: str) -> datetime:
    t = datetime.fromisoformat(s)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def is_subject(body: dict, s: Subject) -> bool:
    ok = body.get("id") == s.pid and body.get("health_id") == s.health_id
    return ok


def rid() -> str:
    return uuid.uuid4().hex


def no_leak(r, s: Subject, what: str) -> None:
    """Takes the response, not its text, so that a failure's traceback shows no patient value."""
    leaked = [i for i, v in enumerate(s.values) if v and v in r.text]
    assert not leaked, f"{what}: response carries patient values (field indexes {leaked})"


def in_capture(w, user: str, item: dict) -> bool:
    scope = USERS[user][1]
    if scope.startswith("fac:"):
        return item["home_facility"] == w.facilities[scope[4:]]
    level = scope.count("-")
    return True if level == 0 else item["province"] == scope if level == 1 else item["district"] == scope


def _etag(w, pid: str) -> str:
    r = w.client.get(f"{P}/{pid}", headers=w.h("clinic_a"))
    assert r.status_code == 200
    return r.headers["ETag"]


def _fresh_dose(w, pid: str) -> tuple[str, str]:
    """A new dose by clinic_a to void or correct. The previous one (or its correction) is voided
    first, in requests of its own: the schedule refuses a second completed Penta-1."""
    for d in w.client.get(f"{P}/{pid}/immunizations", headers=w.h("clinic_a")).json():
        if (d["vaccine"], d["dose_number"], d["status"]) == ("PENTA", 1, "completed"):
            r = w.client.post(f"/api/v1/immunizations/{d['id']}/void", json={"reason": "clearing the previous test dose"},
                              headers=w.h("clinic_a", **{"If-Match": f'"{d["version"]}"'}))
            assert r.status_code == 200
    r = w.client.post(f"{P}/{pid}/immunizations", json=FRESH, headers=w.h("clinic_a"))
    assert r.status_code == 201
    return r.json()["id"], r.headers["ETag"]


def call(ep: str, w, s: Subject, headers: dict, *, unknown: bool = False, user: str | None = None):
    """One request to endpoint `ep` about the subject (or about an id that does not exist)."""
    c, pid = w.client, (new_uuid() if unknown else s.pid)
    if ep == "read":
        return c.get(f"{P}/{pid}", headers=headers)
    if ep == "list":
        return c.get(f"{P}?limit=100", headers=headers)
    if ep == "patch":
        tag = '"1"' if unknown else _etag(w, pid)
        return c.patch(f"{P}/{pid}", json={"sex": "female"}, headers={**headers, "If-Match": tag})
    if ep.startswith("search_"):
        system, value = {"search_bform": ("bform", s.bform), "search_nhr": ("nhr", s.health_id),
                         "search_cnic": ("cnic", s.guardian_cnic)}[ep]
        return c.post(f"{P}/search", json={"system": system, "value": value}, headers=headers)
    if ep == "dose_post":
        return c.post(f"{P}/{pid}/immunizations", json=DOSE_POST.get(user, DOSE), headers=headers)
    if ep == "dose_get":
        return c.get(f"{P}/{pid}/immunizations", headers=headers)
    dose, tag = (new_uuid(), '"1"') if unknown else _fresh_dose(w, s.pid)
    body = {"reason": "entered in error"} if ep == "void" else {"lot_number": "LOT-7", "reason": "lot number typo"}
    return c.post(f"/api/v1/immunizations/{dose}/{ep}", json=body, headers={**headers, "If-Match": tag})


def walk_list(w, s: Subject, user: str, first) -> bool:
    """Follow the list's cursor until the subject is found or the list has passed its creation
    time (newest first); every item on the way must be in the caller's capture scope."""
    r = first
    for _ in range(50):
        assert r.status_code == 200
        items = r.json()["items"]
        outside = [i for i, it in enumerate(items) if not in_capture(w, user, it)]
        assert not outside, f"list items outside the caller's capture scope at positions {outside}"
        found = any(it["id"] == s.pid for it in items)
        if found:
            return True
        nxt = r.json()["next_cursor"]
        if nxt is None or (items and _ts(items[-1]["created_at"]) < s.created_at):
            no_leak(r, s, "list")
            return False
        r = w.client.get(f"{P}?limit=100&cursor={nxt}", headers=w.h(user))
    pytest.fail("list did not settle within 50 pages")


def one_event(runtime, request_id: str):
    events = audit_events(runtime, request_id=request_id)
    assert len(events) == 1, f"expected exactly one audit event for the request, found {len(events)}"
    return events[0]


@pytest.mark.parametrize("user,ep,cell", ROWS)
def test_matrix(shared_world, runtime, subject, user, ep, cell):
    w, s, request_id = shared_world, subject, rid()
    r = call(ep, w, s, w.h(user, **{"X-Request-ID": request_id}), user=user)
    status = 200 if cell in (SEEN, HIDDEN) else cell
    assert r.status_code == status, f"{user} {ep}: status {r.status_code}"
    ev = one_event(runtime, request_id)
    assert ev.actor_username == w.users[user]
    if status >= 400:
        assert r.headers["content-type"].startswith("application/problem+json")
        no_leak(r, s, f"{user} {ep}")
        assert r.json()["status"] == status
        assert ev.outcome == "denied", f"{user} {ep}: audit outcome {ev.outcome}"
        if status == 404:  # out of scope: the attempt is on record against the patient
            assert str(ev.patient_id) == s.pid and ev.outside_capture_scope
        return
    if ep == "list":
        assert walk_list(w, s, user, r) is (cell == SEEN)
        assert ev.outcome == "success" and ev.action == "patient.list"
        return
    outside = user not in CAPTURE
    if ep.startswith("search_"):
        if cell == HIDDEN:
            n = len(r.json())
            assert n == 0, "search result is not empty"
            no_leak(r, s, f"{user} {ep}")
            assert ev.outcome == "denied" and not ev.outside_capture_scope
        else:
            ids = [p["id"] for p in r.json()]
            assert ids == [s.pid]
            assert ev.outcome == "success" and ev.outside_capture_scope is outside
        return
    assert ev.outcome == "success", f"{user} {ep}: audit outcome {ev.outcome}"
    assert str(ev.patient_id) == s.pid and ev.outside_capture_scope is outside
    body = r.json()
    if ep in ("read", "patch"):
        ok = is_subject(body, s)
        assert ok, "id or health_id differs from the subject's"
    elif ep == "dose_get":
        n, ours = len(body), all(d["patient_id"] == s.pid for d in body)
        assert n > 0 and ours, "dose list empty or holding another patient's doses"
    else:  # a dose written by the caller's own facility
        pid, facility, status, supersedes = body["patient_id"], body["facility"], body["status"], body["supersedes_id"]
        assert pid == s.pid and facility == w.facilities[user.removeprefix("clinic_")]
        assert status == ("entered-in-error" if ep == "void" else "completed")
        assert (supersedes is not None) is (ep == "correct")


# --- unauthenticated -------------------------------------------------------------------------

@pytest.mark.parametrize("ep", ENDPOINTS)
@pytest.mark.parametrize("token", ["none", "garbage", "tampered"])
def test_unauthenticated(shared_world, runtime, subject, ep, token):
    w, request_id = shared_world, rid()
    headers = {"X-Request-ID": request_id}
    if token == "garbage":
        headers["Authorization"] = "Bearer not-a-token"
    elif token == "tampered":
        real = w.token("clinic_a")
        headers["Authorization"] = "Bearer " + real[:-4] + ("AAAA" if real[-4:] != "AAAA" else "BBBB")
    r = call(ep, w, subject, headers)
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.headers.get("www-authenticate") == "Bearer"
    no_leak(r, subject, f"unauthenticated {ep}")
    ev = one_event(runtime, request_id)
    assert ev.outcome == "unauthenticated" and ev.actor_username is None
    about = str(ev.patient_id) if ev.patient_id else None  # the attempt is on record against the patient in the path
    assert about == (subject.pid if ep in ("read", "patch", "dose_post", "dose_get") else None)


# --- break-glass -----------------------------------------------------------------------------

OUTSIDE = ["clinic_a2", "clinic_b", "clinic_c", "official_other_district", "official_other_province"]


@pytest.mark.parametrize("user", OUTSIDE)
def test_break_glass_reads_outside_capture_scope(shared_world, runtime, subject, user):
    w, request_id = shared_world, rid()
    assert w.client.get(f"{P}/{subject.pid}", headers=w.h(user)).status_code == 404  # without it: not found
    r = w.client.get(f"{P}/{subject.pid}", headers=w.h(user, **{"X-Request-ID": request_id, "X-Break-Glass-Reason": REASON}))
    assert r.status_code == 200
    ok = is_subject(r.json(), subject)
    assert ok, "id or health_id differs from the subject's"
    ev = one_event(runtime, request_id)
    assert (ev.action, ev.outcome, ev.purpose_of_use) == ("patient.read", "success", "ETREAT")
    assert ev.break_glass and ev.outside_capture_scope and ev.break_glass_reason == REASON
    # the auditor finds it among the patient's break-glass events
    q = f"/api/v1/audit/events?patient_id={subject.pid}&break_glass=true&limit=500"
    for auditor in ("auditor", "auditor_province"):
        page = w.client.get(q, headers=w.h(auditor))
        assert page.status_code == 200
        items = page.json()["items"]
        assert all(e["break_glass"] for e in items)
        mine = [e for e in items if e["request_id"] == request_id]
        assert len(mine) == 1 and mine[0]["actor_username"] == w.users[user] and mine[0]["outcome"] == "success"


@pytest.mark.parametrize("user,status", [("clinic_a2", 404), ("clinic_b", 404), ("clinic_c", 404),
                                         ("official_other_district", 403), ("official_other_province", 403)])
def test_break_glass_does_not_allow_update(shared_world, runtime, subject, user, status):
    w, request_id = shared_world, rid()
    r = w.client.patch(f"{P}/{subject.pid}", json={"sex": "female"},
                       headers=w.h(user, **{"X-Request-ID": request_id, "X-Break-Glass-Reason": REASON,
                                             "If-Match": _etag(w, subject.pid)}))
    assert r.status_code == status
    no_leak(r, subject, "break-glass update")
    ev = one_event(runtime, request_id)
    assert ev.outcome == "denied" and ev.break_glass


@pytest.mark.parametrize("user", ["auditor", "auditor_province", "auditor_other_province", "admin", "steward_province"])
def test_break_glass_refused_to_roles_without_patient_access(shared_world, runtime, subject, user):
    """Role-based refusal: 403 whatever the headers say (the auditor and admin read no patient)."""
    w, request_id = shared_world, rid()
    r = w.client.get(f"{P}/{subject.pid}", headers=w.h(user, **{"X-Request-ID": request_id, "X-Break-Glass-Reason": REASON}))
    assert r.status_code == 403, f"{user} break-glass read: status {r.status_code}"
    no_leak(r, subject, "break-glass by a role without access")
    assert one_event(runtime, request_id).outcome == "denied"


@pytest.mark.parametrize("header,value", [("X-Break-Glass-Reason", "urgent"), ("X-Purpose-Of-Use", "TREAT" * 5)])
def test_malformed_access_headers_are_refused_on_record(shared_world, runtime, subject, header, value):
    """A break-glass reason too short to review (or a malformed purpose) is refused, and the
    refused attempt on a patient is still audited (DESIGN 3.4: every refused attempt)."""
    w, request_id = shared_world, rid()
    r = w.client.get(f"{P}/{subject.pid}", headers=w.h("clinic_c", **{"X-Request-ID": request_id, header: value}))
    assert r.status_code == 422
    no_leak(r, subject, "malformed access header")
    assert one_event(runtime, request_id).outcome == "invalid"


# --- unknown ids -----------------------------------------------------------------------------

UNKNOWN = [("read", u) for u in ("clinic_a", "clinic_c", "official_district", "official_other_province", "official_national")]
UNKNOWN += [("patch", "clinic_a"), ("patch", "clinic_c"), ("dose_post", "clinic_a"), ("dose_post", "clinic_b"),
            ("dose_get", "clinic_a"), ("dose_get", "official_national"), ("dose_get", "official_other_district"),
            ("void", "clinic_a"), ("correct", "clinic_a")]


@pytest.mark.parametrize("ep,user", UNKNOWN)
def test_unknown_id_is_not_found(shared_world, runtime, subject, ep, user):
    w, request_id = shared_world, rid()
    r = call(ep, w, subject, w.h(user, **{"X-Request-ID": request_id}), unknown=True)
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    ev = one_event(runtime, request_id)
    assert ev.outcome == "not_found" and ev.actor_username == w.users[user] and ev.patient_id is None


@pytest.mark.parametrize("ep,user", [("read", "clinic_c"), ("read", "official_other_province"), ("patch", "clinic_b"),
                                     ("dose_get", "official_other_district")])
def test_out_of_scope_answer_is_indistinguishable_from_unknown(shared_world, subject, ep, user):
    """Existence must not leak: the problem for an out-of-scope patient equals the one for an
    id that does not exist, apart from the echoed path and the request id."""
    w = shared_world
    bodies = []
    for unknown in (False, True):
        r = call(ep, w, subject, w.h(user), unknown=unknown)
        assert r.status_code == 404
        bodies.append({k: v for k, v in r.json().items() if k not in ("instance", "request_id")})
    differ = sorted(k for k in set(bodies[0]) | set(bodies[1]) if bodies[0].get(k) != bodies[1].get(k))
    assert not differ, f"404 problems differ in fields {differ}"


def test_refusals_are_visible_to_the_auditor(shared_world, subject):
    """Refusals are on record where auditors look: per patient, with who and why."""
    w = shared_world
    assert w.client.get(f"{P}/{subject.pid}", headers=w.h("official_other_province")).status_code == 404
    assert call("void", w, subject, w.h("clinic_b")).status_code == 403
    r = w.client.get(f"/api/v1/audit/events?patient_id={subject.pid}&outcome=denied&limit=500", headers=w.h("auditor"))
    assert r.status_code == 200
    seen = {(e["action"], e["actor_username"]) for e in r.json()["items"]}
    assert ("patient.read", w.users["official_other_province"]) in seen
    assert ("immunization.void", w.users["clinic_b"]) in seen
