"""Reference data (jurisdictions, facilities) and staff accounts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from api.deps import require
from api.routing import GatedRoute
from registry.context import ServiceContext
from registry.facilities import repository as facilities
from registry.jurisdictions import repository as jurisdictions
from registry.users import service as users
from registry.users.schemas import UserCreate, UserView
from security.access.permissions import Permission as P
from security.audit import trail as audit

router = APIRouter(route_class=GatedRoute, prefix="/api/v1", tags=["reference"])


@router.get("/jurisdictions", summary="Children of a jurisdiction node (the provinces if no parent is given)")
def list_jurisdictions(ctx: Annotated[ServiceContext, Depends(require(P.JURISDICTION_READ))],
                       parent: Annotated[str | None, Query(max_length=32)] = "PK"):
    return [{"code": j.code, "name": j.name, "level": j.level, "parent_code": j.parent_code}
            for j in jurisdictions.children(ctx.session, parent)]


@router.get("/facilities", summary="Facilities, optionally in one province or district")
def list_facilities(ctx: Annotated[ServiceContext, Depends(require(P.FACILITY_READ))],
                    province: Annotated[str | None, Query(max_length=32)] = None,
                    district: Annotated[str | None, Query(max_length=32)] = None):
    return [{"code": f.code, "name": f.name, "kind": f.kind, "jurisdiction_code": f.jurisdiction_code,
             "province": f.province, "district": f.district} for f in facilities.list_in(ctx.session, province=province, district=district)]


@router.get("/users", response_model=list[UserView], summary="Staff accounts (administrators and auditors)")
def list_users(ctx: Annotated[ServiceContext, Depends(require(P.USER_READ))]):
    p = ctx.principal
    return users.list_users(ctx.session, province=None if p.scope.level == "national" else p.scope.province)


@router.post("/users", status_code=201, response_model=UserView, summary="Create a staff account (administrators)")
def create_user(body: UserCreate, ctx: Annotated[ServiceContext, Depends(require(P.USER_MANAGE, action="user.create"))]):
    view = users.create_user(ctx.session, ctx.runtime, body, within=ctx.principal.scope)
    ctx.trail.record(ctx.session, "user.create", audit.SUCCESS, resource_type="User", resource_id=view.id,
                     detail={"role": view.role, "scope_code": view.scope_code})
    return view
