"""The guardian's pages (`/my`): log in with the child's health ID and access code (the citizen
API's service: its throttle and `citizen.login` event), then the child's record, doses (voided and
corrected ones marked) and the access log: who opened the record, when, why, emergency or not.
The same services as `GET /api/v1/citizen/me`, `/me/immunizations` and `/me/access-log`, one
event each; `/my/certificate` is `GET /api/v1/citizen/me/certificate` (`citizen.certificate`): the QR
code drawn on the server as inline SVG (segno) and a card that prints on A6 (or A4). The child
comes from the session, never from the URL."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool

from api.client_address import client_address
from api.console.gate import ConsoleCall, Gate, check_anonymous_csrf, cookie_name, set_cookie
from api.console.session_routes import anonymous_form
from api.console.templating import render
from api.deps import Public, UoW, runtime
from api.routing import GatedRoute
from registry import errors as e
from registry.certificates import card
from registry.certificates.valuesets import DEFAULT_DISEASE, DISEASES
from registry.citizens import service as citizens
from registry.console_sessions import service as sessions
from security.access.permissions import Permission as P

router = APIRouter(route_class=GatedRoute, prefix="/my", include_in_schema=False)


@router.get("/login", dependencies=[Public])
def login_form(request: Request):
    return anonymous_form(request, "my_login.html")


@router.post("/login", dependencies=[Public])
async def login(request: Request, uow: UoW, health_id: Annotated[str, Form(max_length=32)],
                access_code: Annotated[str, Form(max_length=32)]):
    client = client_address(request) or "unknown"
    ctx = citizens.anonymous_context(uow.session, runtime(request), request.state.request_id, client)
    uow.trail, uow.action = ctx.trail, citizens.LOGIN
    await check_anonymous_csrf(request, uow)
    started = await run_in_threadpool(sessions.start_citizen, ctx, health_id, access_code, client)
    response = RedirectResponse("/my", status_code=303)
    set_cookie(request, response, "nhr_session", started.token, started.max_age)
    return response


@router.get("")
async def my_child(call: Annotated[ConsoleCall, Gate(P.CITIZEN_READ_OWN, action="citizen.read")]):
    ctx, generation = call.context(), call.live.generation

    def load():
        return (citizens.read_own(ctx, generation), citizens.immunizations(ctx, generation),
                citizens.access_log(ctx, generation, None, 50, False))

    record, doses, log = await run_in_threadpool(load)
    return render(call.request, "my.html", guardian=True, csrf=call.csrf, child=record, doses=doses, log=log)


@router.get("/certificate")
async def my_certificate(call: Annotated[ConsoleCall, Gate(P.CITIZEN_READ_OWN, action="citizen.certificate")],
                         disease: Annotated[str, Query(max_length=32)] = DEFAULT_DISEASE):
    """A new certificate each time, as the API issues it. Without a certified dose against the
    disease the page says so (the refusal is audited by the service, as in the API)."""
    ctx, generation = call.context(), call.live.generation
    context = {"guardian": True, "csrf": call.csrf, "diseases": DISEASES, "disease": disease}
    try:
        view, issued = await run_in_threadpool(citizens.certificate, ctx, generation, disease)
    except e.InvalidInput as exc:
        return render(call.request, "my_certificate.html", status_code=422, problem=exc.message, **context)
    qr = Markup(card.qr_svg_inline(view.hc1))  # segno's SVG: a path of the code's modules, nothing from the record
    return render(call.request, "my_certificate.html", cert=view, issued=issued, dcc=issued.dcc, qr=qr, **context)


@router.post("/logout")
async def logout(call: Annotated[ConsoleCall, Gate(P.CITIZEN_READ_OWN, action="auth.logout", audited=True)]):
    await run_in_threadpool(sessions.end, call.uow.session, call.uow.trail, call.live)
    response = RedirectResponse("/my/login", status_code=303)
    response.delete_cookie(cookie_name(call.request, "nhr_session"), path="/", secure=True, httponly=True, samesite="strict")
    return response
