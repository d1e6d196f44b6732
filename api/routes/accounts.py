"""Administrators' actions on staff accounts (registry/users/actions.py): deactivate, reactivate,
unlock, password reset, end all sessions. Scoped to the administrator's jurisdiction (404 outside
it), 409 when the account is already in that state, one audit event each."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from api.deps import require
from api.routing import GatedRoute
from registry.context import ServiceContext
from registry.users import actions
from registry.users.schemas import UserView
from security.access.permissions import Permission as P

router = APIRouter(route_class=GatedRoute, prefix="/api/v1/users", tags=["reference"])


class PasswordResetView(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "account": {"id": "d7c6b5a4-9382-4716-a5b4-c3d2e1f00a1b", "username": "clinic.shadman",
                    "display_name": "Vaccinator, BHU Shadman", "role": "clinic_worker", "scope_level": "facility",
                    "scope_code": "F-LAH-02", "active": True, "created_at": "2026-10-13T09:30:12Z"},
        "password": "k7qmw-3xhpa-9rtcz-e4nvd"}]})

    account: UserView
    password: str = Field(description="the new password, shown this once: it is stored only as a hash")


def _gate(action: str):
    return Depends(require(P.USER_MANAGE, action=action))


@router.post("/{user_id}/deactivate", response_model=UserView,
             summary="Deactivate a staff account: it cannot log in, its tokens and console sessions end now")
def deactivate(user_id: uuid.UUID, ctx: Annotated[ServiceContext, _gate(actions.DEACTIVATE)]):
    return actions.deactivate(ctx.session, ctx.trail, user_id, within=ctx.principal.scope)


@router.post("/{user_id}/reactivate", response_model=UserView, summary="Reactivate a deactivated staff account")
def reactivate(user_id: uuid.UUID, ctx: Annotated[ServiceContext, _gate(actions.REACTIVATE)]):
    return actions.reactivate(ctx.session, ctx.trail, user_id, within=ctx.principal.scope)


@router.post("/{user_id}/unlock", response_model=UserView, summary="Clear a staff account's failed logins (login throttle)")
def unlock(user_id: uuid.UUID, ctx: Annotated[ServiceContext, _gate(actions.UNLOCK)]):
    return actions.unlock(ctx.session, ctx.runtime, ctx.trail, user_id, within=ctx.principal.scope)


@router.post("/{user_id}/password-reset", response_model=PasswordResetView,
             summary="Reset a staff account's password to a random one, shown once; its tokens and sessions end")
def password_reset(user_id: uuid.UUID, ctx: Annotated[ServiceContext, _gate(actions.PASSWORD_RESET)]):
    reset = actions.reset_password(ctx.session, ctx.runtime, ctx.trail, user_id, within=ctx.principal.scope)
    body = PasswordResetView(account=reset.account, password=reset.password)
    return JSONResponse(body.model_dump(mode="json"), headers={"Cache-Control": "no-store"})


@router.post("/{user_id}/sessions/end", response_model=UserView,
             summary="End every access token and console session of a staff account")
def end_sessions(user_id: uuid.UUID, ctx: Annotated[ServiceContext, _gate(actions.END_SESSIONS)]):
    return actions.end_sessions(ctx.session, ctx.trail, user_id, within=ctx.principal.scope)
