"""Every route declares its permission or is explicitly public, and the check that enforces it
is real (DESIGN 3.6: access is decided in one place and fails closed)."""

from __future__ import annotations

import re
import types
import uuid

import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.testclient import TestClient

import api.app
from api.console.errors import is_console
from api.deps import Public, check_routes, declared_access, iter_api_routes, public, require
from conftest import audit_events, count_events
from security.access.permissions import AUDITED, Permission


def operations(app: FastAPI) -> set[tuple[str, str]]:
    return {(m, r.path) for r in iter_api_routes(app.routes) for m in r.methods}


def test_every_route_declares_permission_or_public(app):
    routes = list(iter_api_routes(app.routes))
    assert len(routes) >= 10  # the walker really descends into the included routers
    undeclared = [f"{sorted(r.methods)} {r.path}" for r in routes if declared_access(r) is None]
    assert not undeclared, f"routes declaring neither a permission nor public: {undeclared}"
    known = {str(p) for p in Permission} | {"public"}
    assert {declared_access(r) for r in routes} <= known


def test_walk_matches_openapi(app):
    """The walker sees exactly the operations the app serves (no router slips past it)."""
    documented = {(m.upper(), path) for path, ops in app.openapi()["paths"].items() for m in ops}
    hidden = {(m, r.path) for r in iter_api_routes(app.routes) if not r.route.include_in_schema for m in r.methods}
    assert operations(app) == documented | hidden
    # only the offline OpenAPI UI and its assets, and the console's pages (issue 14: HTML, not API), stay out of
    # the document; the UI is public, the console's pages are public or gated like any route
    assert {p for _, p in hidden if not is_console(p)} <= {"/docs", "/assets/{version}/{name}"}
    assert all(declared_access(r) == "public" for r in iter_api_routes(app.routes)
               if not r.route.include_in_schema and not is_console(r.path))
    console_public = {r.path for r in iter_api_routes(app.routes) if is_console(r.path) and declared_access(r) == "public"}
    assert console_public == {"/console/login", "/console/language/{lang}", "/console/static/{version}/{name}", "/verify",
                              "/my/login"}


def test_patient_routes_are_not_public(app):
    public_paths = {r.path for r in iter_api_routes(app.routes) if declared_access(r) == "public"}
    assert not [p for p in public_paths if p.startswith(("/api/v1/patients", "/api/v1/immunizations", "/api/v1/audit"))]


# --- the check can fail ------------------------------------------------------------------------

def _undeclared_router() -> APIRouter:
    router = APIRouter(prefix="/throwaway")

    @router.get("/naked")
    def naked():
        return {}

    return router


def test_check_routes_refuses_an_undeclared_route_in_an_included_router():
    app = FastAPI()
    app.include_router(_undeclared_router())
    with pytest.raises(RuntimeError, match=re.escape("/throwaway/naked")):
        check_routes(app.routes)


def test_check_routes_refuses_an_undeclared_route_nested_two_routers_deep():
    outer = APIRouter(prefix="/outer")
    outer.include_router(_undeclared_router())
    app = FastAPI()
    app.include_router(outer)
    with pytest.raises(RuntimeError, match=re.escape("/throwaway/naked")):
        check_routes(app.routes)


def _served_vs_walked(how: str) -> FastAPI:
    router = APIRouter(prefix="/inner")

    @router.get("/thing", dependencies=[Public])
    def thing():
        return {}

    app = FastAPI()
    if how == "include-prefix":
        app.include_router(router, prefix="/v9")
    else:
        outer = APIRouter(prefix="/v9")
        outer.include_router(router)
        app.include_router(outer)
    return app


@pytest.mark.parametrize("how", ["include-prefix", "nested-router"])
def test_walker_reports_the_paths_actually_served(how):
    """The walker (and so check_routes' error message) must name the path a client calls: with
    an include-time prefix the route is served at /v9/inner/thing."""
    app = _served_vs_walked(how)
    assert TestClient(app).get("/v9/inner/thing").status_code == 200
    assert operations(app) == {("GET", "/v9/inner/thing")}


def test_check_routes_names_only_the_undeclared_route():
    router = APIRouter()

    @router.get("/open", dependencies=[Public])
    def open_():
        return {}

    @router.get("/gated")
    def gated(ctx=Depends(require(Permission.PATIENT_READ))):
        return {}

    @router.post("/forgotten")
    def forgotten():
        return {}

    app = FastAPI()
    app.include_router(router)
    with pytest.raises(RuntimeError) as exc:
        check_routes(app.routes)
    assert "/forgotten" in str(exc.value) and "/open" not in str(exc.value) and "/gated" not in str(exc.value)


@pytest.mark.parametrize("how", ["route", "router"])
def test_public_declaration_passes(how):
    router = APIRouter(dependencies=[Depends(public)] if how == "router" else [])

    @router.get("/open", dependencies=[] if how == "router" else [Depends(public)])
    def open_():
        return {}

    app = FastAPI()
    app.include_router(router)
    check_routes(app.routes)  # does not raise
    assert [declared_access(r) for r in iter_api_routes(app.routes)] == ["public"]


def test_create_app_refuses_to_start_with_an_undeclared_route(runtime, monkeypatch):
    """create_app runs the check on what it includes: swap one of its route modules for one
    holding an undeclared route, and the app refuses to be built."""
    monkeypatch.setattr(api.app, "reference", types.SimpleNamespace(router=_undeclared_router()))
    with pytest.raises(RuntimeError, match=re.escape("/throwaway/naked")):
        api.app.create_app(runtime.settings, runtime)


def test_create_app_accepts_a_public_route(runtime, monkeypatch):
    router = APIRouter(prefix="/throwaway")

    @router.get("/open", dependencies=[Depends(public)])
    def open_():
        return {}

    monkeypatch.setattr(api.app, "reference", types.SimpleNamespace(router=router))
    built = api.app.create_app(runtime.settings, runtime)
    assert ("GET", "/throwaway/open") in operations(built)


# --- refused attempts are audited ----------------------------------------------------------------

def _audited_routes():
    from api.app import create_app
    from registry.settings import Settings

    probe = create_app(Settings(env="test", database_url="sqlite://", key_dir="/nonexistent"), None)
    rows = []
    for r in iter_api_routes(probe.routes):
        access = declared_access(r)
        # console pages answer a missing session with a redirect to the login form (tests/test_console_pages.py)
        if access != "public" and Permission(access) in AUDITED and not is_console(r.path):
            rows.extend(pytest.param(m, r.path, access, id=f"{m} {r.path}") for m in sorted(r.methods))
    return rows


AUDITED_ROUTES = _audited_routes()


def test_audited_routes_cover_the_patient_api():
    paths = {p.values[1] for p in AUDITED_ROUTES}
    assert {"/api/v1/patients", "/api/v1/patients/{patient_id}", "/api/v1/patients/search",
            "/api/v1/patients/{patient_id}/immunizations", "/api/v1/immunizations/{dose_id}/void",
            "/api/v1/immunizations/{dose_id}/correct", "/api/v1/audit/events"} <= paths


@pytest.mark.parametrize("method,path,permission", AUDITED_ROUTES)
def test_unauthenticated_call_writes_exactly_one_audit_event(client, runtime, method, path, permission):
    url = re.sub(r"\{[^}]+\}", lambda _: str(uuid.uuid4()), path)
    request_id = uuid.uuid4().hex
    before = count_events(runtime)
    kwargs = {"json": {}} if method in ("POST", "PATCH", "PUT") else {}
    r = client.request(method, url, headers={"X-Request-ID": request_id}, **kwargs)
    assert r.status_code == 401
    assert r.headers.get("www-authenticate") == "Bearer"
    assert count_events(runtime) == before + 1
    [ev] = audit_events(runtime, request_id=request_id)
    assert ev.outcome == "unauthenticated" and ev.actor_user_id is None
    assert ev.action.split(".")[0] == permission.split(":")[0]
