"""Idempotency-Key on every POST (issue 5, DESIGN invariant 7): replay, mismatch, in-flight,
principal scoping, expiry, encryption at rest, public POSTs, and a walk over every POST route."""

from __future__ import annotations

import re
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from api.console.errors import is_console
from api.deps import declared_access, iter_api_routes
from api.idempotency import REPLAY_ACTION
from conftest import audit_events, new_child
from registry.patients.models import Patient
from registry.sync import idempotency as store
from registry.sync.models import IdempotencyKey
from security.access.permissions import Permission, ROLE_PERMISSIONS

KEYS = IdempotencyKey.__table__
# Public POSTs have no principal to scope a key to: they ignore the header and store nothing.
# A new public POST must be added here deliberately (with a reason in docs/offline-sync.md).
PUBLIC_POSTS = {"/api/v1/auth/token", "/api/v1/citizen/token", "/api/v1/certificates/verify",
                # idempotent by nature: the same cosignature again stores nothing (tests/test_audit_witnesses.py)
                "/api/v1/transparency/cosignatures"}


def _h(world, who="clinic_a", key=None, **extra):
    return world.h(who, **({"Idempotency-Key": key} if key else {}), **extra)


def _patients_with(rt, patient_id) -> int:
    with rt.sessions() as s:
        return s.execute(select(func.count()).select_from(Patient).where(Patient.id == uuid.UUID(str(patient_id)))).scalar_one()


def _key_rows(rt) -> int:
    with rt.sessions() as s:
        return s.execute(select(func.count()).select_from(KEYS)).scalar_one()


def test_replay_returns_the_first_response_and_creates_nothing_more(world, client, runtime):
    key = str(uuid.uuid4())
    body = new_child(id=str(uuid.uuid4()))
    first = client.post("/api/v1/patients", json=body, headers=_h(world, key=key))
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    again = client.post("/api/v1/patients", json=body, headers=_h(world, key=key, **{"X-Request-ID": "replay-" + key[:8]}))
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content  # the same access code too: shown once, replayed to the same caller
    assert again.headers["etag"] == first.headers["etag"] and again.headers["location"] == first.headers["location"]
    assert again.headers["content-type"] == first.headers["content-type"]
    assert _patients_with(runtime, body["id"]) == 1
    # The replay returns patient data again: it is audited, with the patient as subject.
    [ev] = audit_events(runtime, request_id="replay-" + key[:8])
    assert ev.action == REPLAY_ACTION and ev.outcome == "success" and str(ev.patient_id) == body["id"]
    assert ev.detail["replayed_action"] == "patient.create"
    assert not audit_events(runtime, request_id="replay-" + key[:8], action="patient.create")


def test_replay_of_a_dose_writes_no_second_dose(world, client, runtime):
    p = world.register()
    dose = {"vaccine": "BCG", "dose_number": 1, "date_given": "2026-06-02"}
    url = f"/api/v1/patients/{p['id']}/immunizations"
    a = client.post(url, json=dose, headers=_h(world, key="dose-1"))
    b = client.post(url, json=dose, headers=_h(world, key="dose-1"))
    assert a.status_code == b.status_code == 201 and b.json() == a.json()
    listed = client.get(url, headers=world.h("clinic_a")).json()
    assert len(listed) == 1


def test_same_key_with_a_different_body_is_422(world, client, runtime):
    key = str(uuid.uuid4())
    assert client.post("/api/v1/patients", json=new_child(), headers=_h(world, key=key)).status_code == 201
    r = client.post("/api/v1/patients", json=new_child(), headers=_h(world, key=key, **{"X-Request-ID": "mism-" + key[:8]}))
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["errors"][0]["field"] == "Idempotency-Key"
    [ev] = audit_events(runtime, request_id="mism-" + key[:8])
    assert ev.outcome == "invalid"


def test_same_key_on_another_path_is_another_key(world, client):
    p = world.register()
    dose = {"vaccine": "BCG", "dose_number": 1, "date_given": "2026-06-02"}
    assert client.post("/api/v1/patients", json=new_child(), headers=_h(world, key="shared")).status_code == 201
    r = client.post(f"/api/v1/patients/{p['id']}/immunizations", json=dose, headers=_h(world, key="shared"))
    assert r.status_code == 201 and "idempotent-replayed" not in r.headers


def test_another_users_key_never_replays(world, client):
    key = str(uuid.uuid4())
    a = client.post("/api/v1/patients", json=new_child(), headers=_h(world, "clinic_a", key=key))
    b = client.post("/api/v1/patients", json=new_child(), headers=_h(world, "clinic_a2", key=key))
    assert a.status_code == b.status_code == 201
    assert "idempotent-replayed" not in b.headers and b.json()["id"] != a.json()["id"]


def test_a_replay_while_the_first_runs_is_409(world, client, runtime, monkeypatch):
    """Two threads: the first request is held inside the service after its claim committed."""
    import anyio

    from registry.patients import async_register

    entered, go = threading.Event(), threading.Event()
    original = async_register.register_async  # both drivers' path (the sync service in a thread on SQLite)

    async def slow_register(ctx, data):
        entered.set()
        await anyio.to_thread.run_sync(go.wait, 10)
        return await original(ctx, data)

    monkeypatch.setattr(async_register, "register_async", slow_register)
    key, body, results = str(uuid.uuid4()), new_child(id=str(uuid.uuid4())), {}
    headers = _h(world, key=key)
    t = threading.Thread(target=lambda: results.setdefault("first", client.post("/api/v1/patients", json=body, headers=headers)))
    t.start()
    try:
        assert entered.wait(10)
        second = client.post("/api/v1/patients", json=body, headers=headers)
        assert second.status_code == 409 and second.json()["errors"][0]["field"] == "Idempotency-Key"
    finally:
        go.set()
        t.join(20)
    assert results["first"].status_code == 201
    third = client.post("/api/v1/patients", json=body, headers=headers)
    assert third.status_code == 201 and third.headers["idempotent-replayed"] == "true"
    assert _patients_with(runtime, body["id"]) == 1


def _claim_by_hand(runtime, user_id, path, key, body: bytes, *, locked_for: float):
    kh = store.key_hash(user_id, "POST", path, key)
    with runtime.sessions() as s:
        store.claim(s, runtime.keyring, kh, store.fingerprint("POST", path, body), lock_seconds=locked_for, ttl_seconds=3600)
        s.commit()
    return kh


def _user_id(world, who):
    from registry.users.models import User

    with world.runtime.sessions() as s:
        return s.execute(select(User.id).where(User.username == world.users[who])).scalar_one()


def test_a_claim_inserted_by_hand_answers_409_until_its_lock_expires(world, client, runtime):
    import json

    body = new_child()
    raw = json.dumps(body).encode()
    _claim_by_hand(runtime, _user_id(world, "clinic_a"), "/api/v1/patients", "held", raw, locked_for=3600)
    r = client.post("/api/v1/patients", content=raw, headers=_h(world, key="held", **{"Content-Type": "application/json"}))
    assert r.status_code == 409
    # An abandoned claim (its worker died: lock expired) is taken over and the request runs.
    _claim_by_hand(runtime, _user_id(world, "clinic_a"), "/api/v1/patients", "abandoned", raw, locked_for=-1)
    r = client.post("/api/v1/patients", content=raw, headers=_h(world, key="abandoned", **{"Content-Type": "application/json"}))
    assert r.status_code == 201


def test_a_failed_request_releases_its_claim(world, client, runtime):
    url = f"/api/v1/patients/{uuid.uuid4()}/immunizations"
    dose = {"vaccine": "BCG", "dose_number": 1, "date_given": "2026-06-02"}
    before = _key_rows(runtime)
    assert client.post(url, json=dose, headers=_h(world, key="fails")).status_code == 404
    assert _key_rows(runtime) == before
    assert client.post(url, json=dose, headers=_h(world, key="fails")).status_code == 404  # runs again, not 409


def test_keys_expire_and_are_purged(world, client, runtime):
    body = new_child(id=str(uuid.uuid4()))
    assert client.post("/api/v1/patients", json=body, headers=_h(world, key="old")).status_code == 201
    kh = store.key_hash(_user_id(world, "clinic_a"), "POST", "/api/v1/patients", "old")
    with runtime.sessions.begin() as s:
        s.execute(update(KEYS).where(KEYS.c.key_hash == kh).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    # Expired: the request runs again (and the registry refuses the second creation of that id).
    r = client.post("/api/v1/patients", json=body, headers=_h(world, key="old"))
    assert r.status_code == 409 and "idempotent-replayed" not in r.headers
    with runtime.sessions.begin() as s:
        s.execute(update(KEYS).where(KEYS.c.key_hash == kh).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    with runtime.sessions.begin() as s:
        store.purge_expired(s, datetime.now(UTC))
    with runtime.sessions() as s:
        assert s.execute(select(KEYS.c.key_hash).where(KEYS.c.key_hash == kh)).first() is None


def test_default_lifetime_is_a_day(runtime):
    assert runtime.settings.idempotency.ttl_seconds == 86_400


def test_stored_response_is_encrypted(world, client, runtime, db_url):
    body = new_child()
    r = client.post("/api/v1/patients", json=body, headers=_h(world, key="secret-one"))
    assert r.status_code == 201
    kh = store.key_hash(_user_id(world, "clinic_a"), "POST", "/api/v1/patients", "secret-one")
    with runtime.sessions() as s:
        row = s.execute(select(KEYS).where(KEYS.c.key_hash == kh)).one()
    assert row.state == "done" and row.status_code == 201
    for value in (body["given_name"], body["family_name"], body["phone"], r.json()["access_code"], r.json()["health_id"]):
        assert value.encode() not in row.response_ct
    assert store.unseal(runtime.keyring, kh, row.response_ct).body == r.content
    with pytest.raises(Exception):
        store.unseal(runtime.keyring, b"\x00" * 32, row.response_ct)  # bound to its row
    if db_url.startswith("sqlite"):
        path = Path(db_url.split("///", 1)[1])
        raw = b"".join(p.read_bytes() for p in (path, Path(str(path) + "-wal")) if p.exists())
        assert body["given_name"].encode() not in raw and r.json()["access_code"].encode() not in raw


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9".encode("latin-1")])
def test_malformed_keys_are_refused(world, client, key):
    r = client.post("/api/v1/patients", json=new_child(), headers={**world.h("clinic_a"), "Idempotency-Key": key})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "Idempotency-Key"


def test_login_does_not_honour_keys(world, client, runtime):
    """Login issues a bearer token: it is never stored at rest to be replayed. Each call with
    the same key logs in afresh; nothing is written to the key store."""
    before = _key_rows(runtime)
    form = {"username": world.users["clinic_a"], "password": "correct-horse-battery-staple-42"}
    a = client.post("/api/v1/auth/token", data=form, headers={"Idempotency-Key": "login"})
    b = client.post("/api/v1/auth/token", data=form, headers={"Idempotency-Key": "login"})
    assert a.status_code == b.status_code == 200
    assert "idempotent-replayed" not in b.headers
    assert _key_rows(runtime) == before


def test_public_posts_are_exactly_the_known_ones(app):
    public = {r.path for r in iter_api_routes(app.routes) if "POST" in r.methods and declared_access(r) == "public"
              and not is_console(r.path)}  # the console's forms: browsers send no Idempotency-Key (CSRF-checked)
    assert public == PUBLIC_POSTS, "a new public POST must decide whether it honours Idempotency-Key"


def _who_can(permission: str) -> str:
    by_role = {"clinic_worker": "clinic_a", "health_official": "official_national", "auditor": "auditor", "admin": "admin",
               "data_steward": "steward_province"}
    for role, who in by_role.items():
        if Permission(permission) in ROLE_PERMISSIONS[role]:
            return who
    raise AssertionError(f"no test user holds {permission}")


def test_every_gated_post_route_honours_the_key(app, world, client, runtime):
    """Walk every POST route: for each gated one, store a response by hand under a key, then
    call the route with that key: it must answer the stored response, marked replayed. A route
    added later is walked too, so none can escape."""
    walked = 0
    for r in iter_api_routes(app.routes):
        if "POST" not in r.methods or declared_access(r) == "public" or is_console(r.path):
            continue  # console forms are for browsers, which send no Idempotency-Key
        who = _who_can(declared_access(r))
        path = re.sub(r"\{[^}]+\}", lambda _: str(uuid.uuid4()), r.path)
        body, key = b"{}", f"walk-{uuid.uuid4()}"
        kh = store.key_hash(_user_id(world, who), "POST", path, key)
        with runtime.sessions() as s:
            claim = store.claim(s, runtime.keyring, kh, store.fingerprint("POST", path, body), lock_seconds=60, ttl_seconds=60)
            assert store.complete(s, runtime.keyring, claim, store.Stored(299, b'{"walked":true}', {"content-type": "application/json"}))
            s.commit()
        resp = client.post(path, content=body, headers={**world.h(who), "Idempotency-Key": key, "Content-Type": "application/json"})
        assert (resp.status_code, resp.headers.get("idempotent-replayed")) == (299, "true"), f"POST {r.path} ignores Idempotency-Key"
        assert resp.json() == {"walked": True}
        walked += 1
    assert walked >= 8


def test_a_gated_post_without_an_audited_permission_also_replays_and_releases(runtime, world, monkeypatch):
    """The mechanism is in the gate, not in the audit: a POST gated by a permission that is not
    audited honours the key too, and gives it back when it fails."""
    import types

    from fastapi import APIRouter, Depends
    from fastapi.testclient import TestClient

    import api.app
    from api.deps import require
    from registry.errors import NotFound

    router = APIRouter(prefix="/throwaway")
    calls = []

    @router.post("/echo")
    def echo(body: dict, ctx=Depends(require(Permission.FACILITY_READ))):
        calls.append(1)
        if body.get("fail"):
            raise NotFound("nothing here")
        return {"n": len(calls)}

    monkeypatch.setattr(api.app, "reference", types.SimpleNamespace(router=router))
    with TestClient(api.app.create_app(runtime.settings, runtime), raise_server_exceptions=False) as c:
        h = {**world.h("clinic_a"), "Idempotency-Key": "echo"}
        a, b = c.post("/throwaway/echo", json={}, headers=h), c.post("/throwaway/echo", json={}, headers=h)
        assert a.json() == b.json() == {"n": 1} and b.headers["idempotent-replayed"] == "true"
        h["Idempotency-Key"] = "echo-fails"
        assert c.post("/throwaway/echo", json={"fail": 1}, headers=h).status_code == 404
        assert c.post("/throwaway/echo", json={"fail": 1}, headers=h).status_code == 404
        assert len(calls) == 3


def test_data_never_commits_without_its_stored_response(world, client, runtime, monkeypatch):
    """If the response cannot be stored on the claim (here: the claim was lost), the data is
    rolled back too, the client gets a 500 (nothing acknowledged), and the key is free again."""
    body = new_child(id=str(uuid.uuid4()))
    before = _key_rows(runtime)
    from registry.sync import idempotency_async

    async def lost(*a, **k):
        return False

    monkeypatch.setattr(store, "complete", lambda *a, **k: False)
    monkeypatch.setattr(idempotency_async, "complete", lost)  # the async unit of work's (PostgreSQL) store
    r = client.post("/api/v1/patients", json=body, headers=_h(world, key="lost"))
    assert r.status_code == 500
    assert _patients_with(runtime, body["id"]) == 0 and _key_rows(runtime) == before
    monkeypatch.undo()
    again = client.post("/api/v1/patients", json=body, headers=_h(world, key="lost"))
    assert again.status_code == 201 and "idempotent-replayed" not in again.headers
