"""Staff accounts for administrators: the list (auditors see it too, as `GET /api/v1/users`),
create (`user.create`, the same service and event as `POST /api/v1/users`: password policy,
scope rules, the administrator's own province only), and the account actions of
registry/users/actions.py, the same services and events as `POST /api/v1/users/{id}/...`:
deactivate, reactivate, unlock, password reset (the new password shown once, on a no-store page),
end all sessions. Each action is chosen on the list, confirmed on a page of its own (a POST with
the CSRF token, naming the account) and done by the confirmation's POST."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Form
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from api.console.gate import ConsoleCall, Gate
from api.console.templating import render
from api.deps import runtime
from api.routing import GatedRoute
from registry import errors as e
from registry.users import actions
from registry.users import service as users
from registry.users.schemas import UserCreate
from security.access.permissions import ROLE_SCOPE_LEVELS, Role
from security.access.permissions import Permission as P
from security.audit import trail as audit

router = APIRouter(route_class=GatedRoute, prefix="/console/staff", include_in_schema=False)


def _list(call: ConsoleCall, **context):
    p = call.principal
    accounts = users.list_users(call.uow.session, province=None if p.scope.level == "national" else p.scope.province)
    return render(call.request, "staff.html", me=p, csrf=call.csrf, accounts=accounts, roles=[r.value for r in Role],
                  levels=ROLE_SCOPE_LEVELS,
                  min_length=runtime(call.request).settings.passwords.min_length, **context)


@router.get("")
async def staff(call: Annotated[ConsoleCall, Gate(P.USER_READ)]):
    return await run_in_threadpool(_list, call)


@router.post("/create")
async def create(call: Annotated[ConsoleCall, Gate(P.USER_MANAGE, action="user.create")],
                 username: Annotated[str, Form(max_length=64)], display_name: Annotated[str, Form(max_length=120)],
                 password: Annotated[str, Form(max_length=128)], role: Annotated[str, Form(max_length=32)],
                 scope_code: Annotated[str, Form(max_length=32)]):
    ctx = call.context()
    try:
        body = UserCreate(username=username, display_name=display_name, password=password, role=role, scope_code=scope_code)
    except ValidationError as exc:
        field = str(exc.errors()[0]["loc"][0]) if exc.errors() else "form"
        raise e.InvalidInput(f"check the field: {field}", field=field) from None

    def run():
        view = users.create_user(ctx.session, ctx.runtime, body, within=ctx.principal.scope)
        ctx.trail.record(ctx.session, "user.create", audit.SUCCESS, resource_type="User", resource_id=view.id,
                         detail={"role": view.role, "scope_code": view.scope_code})
        return view

    await run_in_threadpool(run)
    return RedirectResponse("/console/staff", status_code=303)


ACTIONS = ("deactivate", "reactivate", "unlock", "password-reset", "sessions/end")  # each a POST below


@router.post("/confirm")
async def confirm(call: Annotated[ConsoleCall, Gate(P.USER_MANAGE, audited=False)],
                  user_id: Annotated[uuid.UUID, Form()], action: Annotated[str, Form(max_length=32)]):
    """Ask before acting: nothing changes here (the account is looked up in the same scope)."""
    if action not in ACTIONS:
        raise e.InvalidInput("choose one of the listed actions", field="action")
    account = await run_in_threadpool(actions.find, call.uow.session, user_id, within=call.principal.scope)
    return render(call.request, "staff_confirm.html", me=call.principal, csrf=call.csrf, account=account, action=action)


def _done():
    return RedirectResponse("/console/staff", status_code=303)


@router.post("/deactivate")
async def deactivate(call: Annotated[ConsoleCall, Gate(P.USER_MANAGE, action=actions.DEACTIVATE)],
                     user_id: Annotated[uuid.UUID, Form()]):
    ctx = call.context()
    await run_in_threadpool(actions.deactivate, ctx.session, ctx.trail, user_id, within=ctx.principal.scope)
    return _done()


@router.post("/reactivate")
async def reactivate(call: Annotated[ConsoleCall, Gate(P.USER_MANAGE, action=actions.REACTIVATE)],
                     user_id: Annotated[uuid.UUID, Form()]):
    ctx = call.context()
    await run_in_threadpool(actions.reactivate, ctx.session, ctx.trail, user_id, within=ctx.principal.scope)
    return _done()


@router.post("/unlock")
async def unlock(call: Annotated[ConsoleCall, Gate(P.USER_MANAGE, action=actions.UNLOCK)],
                 user_id: Annotated[uuid.UUID, Form()]):
    ctx = call.context()
    await run_in_threadpool(actions.unlock, ctx.session, ctx.runtime, ctx.trail, user_id, within=ctx.principal.scope)
    return _done()


@router.post("/sessions/end")
async def end_sessions(call: Annotated[ConsoleCall, Gate(P.USER_MANAGE, action=actions.END_SESSIONS)],
                       user_id: Annotated[uuid.UUID, Form()]):
    ctx = call.context()
    await run_in_threadpool(actions.end_sessions, ctx.session, ctx.trail, user_id, within=ctx.principal.scope)
    return _done()


@router.post("/password-reset")
async def password_reset(call: Annotated[ConsoleCall, Gate(P.USER_MANAGE, action=actions.PASSWORD_RESET)],
                         user_id: Annotated[uuid.UUID, Form()]):
    """The new password is on this page only: the response is never stored (no-store) and the
    page is not reachable again; a lost password means another reset."""
    ctx = call.context()
    reset = await run_in_threadpool(actions.reset_password, ctx.session, ctx.runtime, ctx.trail, user_id,
                                    within=ctx.principal.scope)
    page = render(call.request, "staff_password.html", me=call.principal, csrf=call.csrf, account=reset.account,
                  password=reset.password)
    page.headers["Cache-Control"] = "no-store"
    return page
