"""Staff accounts for administrators: the list (auditors see it too, as `GET /api/v1/users`),
create (`user.create`, the same service and event as `POST /api/v1/users`: password policy,
scope rules, the administrator's own province only) and deactivate (`user.deactivate`, which also
ends the account's console sessions)."""

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
from registry import errors as e
from registry.users import actions
from registry.users import service as users
from registry.users.schemas import UserCreate
from security.access.permissions import ROLE_SCOPE_LEVELS, Role
from security.access.permissions import Permission as P
from security.audit import trail as audit

router = APIRouter(prefix="/console/staff", include_in_schema=False)


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


@router.post("/deactivate")
async def deactivate(call: Annotated[ConsoleCall, Gate(P.USER_MANAGE, action="user.deactivate")],
                     user_id: Annotated[uuid.UUID, Form()]):
    ctx = call.context()
    await run_in_threadpool(actions.deactivate, ctx.session, ctx.trail, user_id, within=ctx.principal.scope)
    return RedirectResponse("/console/staff", status_code=303)
