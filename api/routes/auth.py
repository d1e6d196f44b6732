"""Login (OAuth2 password flow), logout and who-am-I."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.security import OAuth2PasswordRequestForm

from api.deps import Public, UoW, client_address, require, runtime
from api.routing import GatedRoute
from registry.context import ServiceContext
from registry.users import service
from registry.users.schemas import TokenResponse
from security.access.permissions import Permission as P
from security.access.principal import AccessContext
from security.audit.trail import AuditTrail

router = APIRouter(route_class=GatedRoute, prefix="/api/v1", tags=["auth"])


@router.post("/auth/token", response_model=TokenResponse, dependencies=[Public],
             summary="Log in (OAuth2 password flow); returns a short-lived bearer token")
def token(request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()], uow: UoW):
    client = client_address(request) or "unknown"
    uow.trail = AuditTrail(AccessContext(None, None, request.state.request_id, client))
    uow.action = "auth.login"
    return service.login(uow.session, runtime(request), uow.trail, form.username, form.password, client)


@router.post("/auth/logout", status_code=204,
             summary="Log out: this token and every other access token of the account stop working on every worker")
def logout(ctx: Annotated[ServiceContext, Depends(require(P.JURISDICTION_READ, action="auth.logout"))]):
    service.logout(ctx.session, ctx.trail, ctx.principal.user_id)


@router.get("/me", summary="The principal behind the token: role, scope and permissions")
def me(ctx: Annotated[ServiceContext, Depends(require(P.JURISDICTION_READ))]):
    p = ctx.principal
    return {"user_id": str(p.user_id), "username": p.username, "role": p.role, "scope": {
        "level": p.scope.level, "code": p.scope.code, "province": p.scope.province, "district": p.scope.district},
        "search_scope": p.search_scope.level, "permissions": sorted(p.permissions), "purpose_of_use": ctx.access.purpose}
