"""The hot gate (api/hot_gate.py) answers and audits exactly as the dependency gate (api/deps.py).

Every case runs twice over the same database and runtime: through the registry as served (the
`@hot` routes taken by HotGateMiddleware) and through the same app built with `NHR_HOT_GATE=false`
(every route through FastAPI's dependency resolution). Status, problem body, the headers a client
or a browser acts on, and the audit events the request wrote must be the same; and each case
states whether the hot gate served it or handed it to the dependency path, which is checked too,
so a hot gate that silently declined everything would fail here.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Callable

import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import delete, insert

from api import hot_gate
from api.app import create_app
from api.deps import check_routes, require
from conftest import audit_events, build_world
from registry import rate_limit
from security.access.permissions import Permission as P
from security.access.principal import Principal

HEADERS_COMPARED = ("content-type", "www-authenticate", "etag", "location", "cache-control", "content-security-policy",
                    "x-content-type-options", "x-frame-options", "referrer-policy", "permissions-policy")
EVENT_IGNORED = {"id", "occurred_at", "request_id", "mac"}


@pytest.fixture(scope="module")
def cold_client(runtime):
    settings = runtime.settings.model_copy(update={"serve": runtime.settings.serve.model_copy(update={"hot_gate": False})})
    app = create_app(settings, runtime)
    assert not any(m.cls is hot_gate.HotGateMiddleware for m in app.user_middleware)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def scene(client, runtime):
    assert any(m.cls is hot_gate.HotGateMiddleware for m in client.app.user_middleware)
    w = build_world(client, runtime)
    child = w.register("clinic_a")
    revoked = w.token("clinic_a2")
    assert client.post("/api/v1/auth/logout", headers={"Authorization": f"Bearer {revoked}"}).status_code == 204
    runtime.token_generations._seen.clear()  # the revocation is seen at once (the wait is test_token_revocation's)
    me = client.get("/api/v1/me", headers=w.h("official_province")).json()
    limited = Principal(uuid.UUID(me["user_id"]), me["username"], "health_official", None)
    return w, child, revoked, limited


def _exhaust(runtime, principal) -> None:
    """Fill `principal`'s rate-limit window: its next patient-data request is refused (429)."""
    t = rate_limit.RateLimitWindow.__table__
    key = rate_limit.key_of(principal)
    period, _ = rate_limit._window(runtime.settings.limits.rate_limit_window_seconds)
    with runtime.engine.begin() as c:
        c.execute(delete(t).where(t.c.key == key))
        c.execute(insert(t).values(key=key, period=period, hits=10**9))


@dataclass
class Case:
    name: str
    hot: bool  # served by the hot gate (else handed to the dependency path)
    status: int
    request: Callable  # (scene) -> (method, path, headers, json body or None)
    before: Callable | None = None  # (runtime, scene) before each of the two calls
    audited: bool = True  # False: refused before any gate ran (as before the hot gate), so no principal to audit


def _read(who=None, patient=None, token=None, **headers):
    def build(scene):
        w, child, revoked, _ = scene
        h = dict(headers)
        if who:
            h.update(w.h(who))
        if token == "bad":
            h["Authorization"] = "Bearer not.a.token"
        elif token == "revoked":
            h["Authorization"] = f"Bearer {revoked}"
        pid = patient or child["id"]
        return "GET", f"/api/v1/patients/{pid}", h, None
    return build


def _search(who=None, body=None, token=None, **headers):
    def build(scene):
        w, child, revoked, _ = scene
        h = dict(headers)
        if who:
            h.update(w.h(who))
        if token == "bad":
            h["Authorization"] = "Bearer not.a.token"
        elif token == "revoked":
            h["Authorization"] = f"Bearer {revoked}"
        return "POST", "/api/v1/patients/search", h, body if body is not None else {"system": "bform",
                                                                                    "value": child["_input"]["bform"]}
    return build


def _limited(runtime, scene):
    _exhaust(runtime, scene[3])


READ_CASES = [
    Case("ok", True, 200, _read("clinic_a")),
    Case("ok, purpose of use", True, 200, _read("official_province", **{"X-Purpose-Of-Use": "HQUALIMP"})),
    Case("no token", True, 401, _read()),
    Case("bad token", True, 401, _read(token="bad")),
    Case("revoked token", True, 401, _read(token="revoked")),
    Case("not a bearer token", True, 401, _read(Authorization="Basic Zm9vOmJhcg==")),
    Case("wrong role", True, 403, _read("auditor")),
    Case("out of scope", True, 404, _read("clinic_c")),
    Case("break-glass", True, 200, _read("clinic_c", **{"X-Break-Glass-Reason": "unconscious child, no card"})),
    Case("break-glass reason too short", True, 422, _read("clinic_c", **{"X-Break-Glass-Reason": "urgent"})),
    Case("unknown id", True, 404, _read("clinic_a", patient=str(uuid.UUID(int=7)))),
    Case("rate limited", True, 429, _read("official_province"), before=_limited),
    Case("bad purpose header", True, 422, _read("clinic_a", **{"X-Purpose-Of-Use": "NOT-A-CODE"})),
    Case("bad id", False, 422, _read("clinic_a", patient="not-a-uuid")),
    Case("repeated header", False, 200, lambda s: ("GET", f"/api/v1/patients/{s[1]['id']}",
                                                   [*s[0].h("clinic_a").items(), ("X-Purpose-Of-Use", "TREAT"),
                                                    ("X-Purpose-Of-Use", "PUBHLTH")], None)),
]

SEARCH_CASES = [
    Case("ok", True, 200, _search("clinic_a")),
    Case("ok, search scope", True, 200, _search("clinic_c", **{"X-Purpose-Of-Use": "CAREMGT"})),
    Case("no token", True, 401, _search()),
    Case("bad token", True, 401, _search(token="bad")),
    Case("revoked token", True, 401, _search(token="revoked")),
    Case("wrong role", True, 403, _search("auditor")),
    Case("out of scope", True, 200, _search("official_other_province")),
    Case("unknown identifier", True, 200, _search("clinic_a", body={"system": "bform", "value": "35202-0000000-1"})),
    Case("rate limited", True, 429, _search("official_province"), before=_limited),
    Case("bad identifier", True, 422, _search("clinic_a", body={"system": "bform", "value": "12"})),
    Case("bad body", False, 422, _search("clinic_a", body={"system": "passport", "value": "X"})),
    Case("not JSON", False, 422, lambda s: ("POST", "/api/v1/patients/search",
                                            {**s[0].h("clinic_a"), "Content-Type": "application/json"}, b"{nope")),
    # refused after the gate and audited on both paths (api/routing.py)
    Case("Idempotency-Key", False, 200, _search("clinic_a", **{"Idempotency-Key": "hot-gate-" + uuid.uuid4().hex})),
]


def _send(c: TestClient, method: str, path: str, headers, body, rid: str):
    headers = [*(headers.items() if isinstance(headers, dict) else headers), ("X-Request-ID", rid)]
    if isinstance(body, bytes):
        return c.request(method, path, headers=headers, content=body)
    return c.request(method, path, headers=headers, json=body)


def _events(runtime, rid: str) -> list[dict]:
    return [{k: v for k, v in e._mapping.items() if k not in EVENT_IGNORED} for e in audit_events(runtime, request_id=rid)]


def _answer(r, rid: str):
    body = r.json() if r.content else None
    if isinstance(body, dict) and body.get("request_id") == rid:
        body = {**body, "request_id": "<rid>"}
    headers = {k: r.headers.get(k) for k in HEADERS_COMPARED}
    assert r.headers.get("x-request-id") == rid
    return r.status_code, body, headers, ("retry-after" in r.headers)


@pytest.fixture
def served_hot(monkeypatch):
    """How many requests the hot gate itself admitted (its own call of `admit`)."""
    calls = []
    real = hot_gate.admit

    async def counting(*args, **kw):
        calls.append(args[2])
        return await real(*args, **kw)

    monkeypatch.setattr(hot_gate, "admit", counting)
    return calls


@pytest.mark.parametrize("case", READ_CASES + SEARCH_CASES,
                         ids=[f"read-{c.name}" for c in READ_CASES] + [f"search-{c.name}" for c in SEARCH_CASES])
def test_the_hot_gate_answers_and_audits_as_the_dependency_gate(case, client, cold_client, runtime, scene, served_hot):
    method, path, headers, body = case.request(scene)
    answers, events = [], []
    for c in (client, cold_client):
        if case.before:
            case.before(runtime, scene)
        rid = uuid.uuid4().hex
        if "Idempotency-Key" in (headers if isinstance(headers, dict) else {}):  # a key is per request: a new one each
            headers = {**headers, "Idempotency-Key": "hot-gate-" + uuid.uuid4().hex}
        answers.append(_answer(_send(c, method, path, headers, body, rid), rid))
        events.append(_events(runtime, rid))
    (hot_status, *_), (cold_status, *_) = answers
    assert hot_status == case.status, answers[0]
    assert answers[0] == answers[1]
    assert events[0] == events[1]
    assert (len(events[0]) >= 1) == case.audited, "every request past the gate leaves an audit event"
    assert len(served_hot) == (1 if case.hot else 0)


def test_the_openapi_document_is_the_same_with_and_without_the_hot_gate(client, cold_client):
    hot, cold = client.app.openapi(), cold_client.app.openapi()
    assert hot == cold
    for path, method in (("/api/v1/patients/{patient_id}", "get"), ("/api/v1/patients/search", "post")):
        op = hot["paths"][path][method]
        assert op["security"] and "200" in op["responses"] and "401" in op["responses"]


def test_the_hot_routes_are_still_covered_by_the_route_check(client):
    planned = hot_gate.hot_routes(client.app)
    assert {(h.method, h.route.path) for h in planned} == {("GET", "/api/v1/patients/{patient_id}"),
                                                             ("POST", "/api/v1/patients/search"),
                                                             ("POST", "/api/v1/patients"),  # register, issue 17
                                                             ("POST", "/api/v1/patients/{patient_id}/immunizations")}
    assert {h.permission for h in planned} == {P.PATIENT_READ, P.PATIENT_SEARCH, P.PATIENT_CREATE, P.IMMUNIZATION_RECORD}
    assert {h.route.path for h in planned if h.on_loop} == {"/api/v1/patients", "/api/v1/patients/{patient_id}/immunizations"}


def test_a_hot_route_without_a_declared_permission_does_not_start():
    router = APIRouter()

    @router.get("/open/{x}")
    @hot_gate.hot
    async def undeclared(x: str):
        return {}

    app = FastAPI()
    app.include_router(router)
    with pytest.raises(RuntimeError, match="require"):
        hot_gate.hot_routes(app)
    with pytest.raises(RuntimeError, match="without a declared permission"):
        check_routes(app.routes)


def test_a_hot_route_with_parameters_it_cannot_pass_does_not_start():
    router = APIRouter()

    @router.get("/q/{x}")
    @hot_gate.hot
    async def with_query(x: str, ctx=Depends(require(P.PATIENT_READ)), page: int = 1):
        return {}

    app = FastAPI()
    app.include_router(router)
    with pytest.raises(RuntimeError, match="only path parameters"):
        hot_gate.hot_routes(app)


def test_requests_that_find_a_token_generation_stale_share_one_read():
    """The gate's revocation check (api/deps.py `_load_once`): one read per account and process at a
    time, the others wait for it; a read that fails fails its waiters (no token accepted unread)."""
    import asyncio

    from api import deps

    class Counting:
        def __init__(self, result):
            self.calls, self.result = [], result

        def load(self, user_id):
            self.calls.append(user_id)
            time.sleep(0.05)
            if isinstance(self.result, Exception):
                raise self.result
            return self.result

    uid = uuid.uuid4()

    async def burst(cache, n=20):
        return await asyncio.gather(*(deps._load_once(cache, uid) for _ in range(n)), return_exceptions=True)

    ok = Counting(3)
    assert asyncio.run(burst(ok)) == [3] * 20 and len(ok.calls) == 1
    assert asyncio.run(burst(ok, 1)) == [3] and len(ok.calls) == 2  # once done, the next stale entry reads again
    failing = Counting(RuntimeError("database down"))
    assert all(isinstance(r, RuntimeError) for r in asyncio.run(burst(failing))) and len(failing.calls) == 1
    assert not deps._LOADING
