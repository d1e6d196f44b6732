"""Log in, log out, the home page and the language switch."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from api.client_address import client_address
from api.console import i18n
from api.console.gate import ConsoleCall, Gate, anonymous_csrf, check_anonymous_csrf, cookie_name, secure, set_cookie
from api.console.templating import render
from api.deps import Public, UoW, runtime
from api.routing import GatedRoute
from registry.console_sessions import service as sessions
from security.access.permissions import Permission as P
from security.access.principal import AccessContext
from security.audit.trail import AuditTrail

router = APIRouter(route_class=GatedRoute, include_in_schema=False)

LANDING = {"health_official": "/console/children", "clinic_worker": "/console/children"}


def anonymous_form(request: Request, template: str, **context) -> Response:
    token, new = anonymous_csrf(request)
    response = render(request, template, csrf=token, **context)
    if new:
        set_cookie(request, response, "nhr_csrf", token, None)
    return response


@router.get("/console/login", dependencies=[Public])
def login_form(request: Request):
    return anonymous_form(request, "login.html")


@router.post("/console/login", dependencies=[Public])
async def login(request: Request, uow: UoW, username: Annotated[str, Form(max_length=64)],
                password: Annotated[str, Form(max_length=256)]):
    """The API's login service (argon2id, throttle, `auth.login` event), then a server-side session."""
    client = client_address(request) or "unknown"
    uow.trail = AuditTrail(AccessContext(None, None, request.state.request_id, client))
    uow.action = "auth.login"
    await check_anonymous_csrf(request, uow)
    started = await run_in_threadpool(sessions.start, uow.session, runtime(request), uow.trail, username, password, client)
    response = RedirectResponse("/console", status_code=303)
    set_cookie(request, response, "nhr_session", started.token, started.max_age)
    return response


@router.post("/console/logout")
async def logout(call: Annotated[ConsoleCall, Gate(P.JURISDICTION_READ, action="auth.logout")]):
    await run_in_threadpool(sessions.end, call.uow.session, call.uow.trail, call.live)
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(cookie_name(call.request, "nhr_session"), path="/", secure=True, httponly=True, samesite="strict")
    return response


@router.get("/console")
def home(call: Annotated[ConsoleCall, Gate(P.JURISDICTION_READ)]):
    return render(call.request, "home.html", me=call.principal, csrf=call.csrf)


@router.get("/console/language/{lang}", dependencies=[Public])
def language(request: Request, lang: str, back: Annotated[str, Query(max_length=200)] = "/console"):
    """Remember the reader's language (a cookie, for a year); anonymous pages can switch too. A link,
    not a form: it changes a display preference only, and `back` is a path of this site (never a
    search value: those travel in POST bodies)."""
    target = back if back.startswith("/") and not back.startswith("//") and "\\" not in back else "/console"
    response = RedirectResponse(target, status_code=303)
    if lang in i18n.LANGUAGES:
        response.set_cookie(i18n.COOKIE, lang, max_age=365 * 86400, path="/", samesite="lax", httponly=True,
                            secure=secure(request))
    return response
