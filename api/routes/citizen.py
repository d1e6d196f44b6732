"""The citizen view (a guardian with the child's health ID and access code) and reissuing a
lost access code at a facility. HTTP only: see registry/citizens/service.py.

The patient a citizen reaches comes from its token, never from the URL: no route here takes a
patient id except the staff route that reissues a code.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import ValidationError

from api.deps import Public, UoW, client_address, oauth2, require, runtime
from api.routing import GatedRoute
from registry import errors as e
from registry.citizens import service
from registry.citizens.schemas import (EXAMPLE_DOSES, AccessCodeIssued, AccessLogPage, CitizenCertificate, CitizenDose,
                                       CitizenLogin, CitizenRecord, CitizenToken)
from registry.context import ServiceContext
from security import tokens
from security.access.permissions import Permission as P

router = APIRouter(route_class=GatedRoute, prefix="/api/v1")
_LOGIN_BODY = {"requestBody": {"required": True, "content": {
    "application/x-www-form-urlencoded": {"schema": CitizenLogin.model_json_schema(),
                                          "example": {"health_id": "0302-1711-7681", "access_code": "K7Q4-M9PX-2RC"}},
    "application/json": {"schema": CitizenLogin.model_json_schema(),
                         "example": {"health_id": "0302-1711-7681", "access_code": "K7Q4-M9PX-2RC"}},
}}}


async def _login_body(request: Request) -> CitizenLogin | None:
    """Form or JSON; anything unreadable is None (refused after the trail exists, so audited)."""
    try:
        if request.headers.get("content-type", "").startswith("application/json"):
            data = await request.json()
        else:
            data = dict(await request.form())
        return CitizenLogin.model_validate(data)
    except (ValueError, ValidationError, TypeError):
        return None


@router.post("/citizen/token", response_model=CitizenToken, dependencies=[Public], tags=["citizen"],
             summary="Log in as a guardian with the child's health ID and access code",
             description="Returns a short-lived bearer token for the citizen view of that one child. Throttled per "
                         "health ID and per client; a wrong health ID and a wrong code get the same answer. Send two "
                         "fields, as a form (`application/x-www-form-urlencoded`) or as JSON: `health_id`, the child's "
                         "health ID as printed on the card (e.g. `0302-1711-7681`), and `access_code`, the access code "
                         "printed on the card (e.g. `K7Q4-M9PX-2RC`).",
             openapi_extra=_LOGIN_BODY)
def citizen_token(request: Request, uow: UoW, body: Annotated[CitizenLogin | None, Depends(_login_body)]):
    client = client_address(request) or "unknown"
    ctx = service.anonymous_context(uow.session, runtime(request), request.state.request_id, client)
    uow.trail, uow.action = ctx.trail, service.LOGIN
    if body is None:
        raise e.InvalidInput("send health_id and access_code, as a form or as JSON", field="body")
    return service.login(ctx, body.health_id, body.access_code, client)


def _generation(request: Request, token: str | None) -> object:
    """The code generation the token was issued for (the gate has already verified the token)."""
    try:
        return tokens.verify(runtime(request).tokens, token or "").get("gen")
    except tokens.InvalidToken:
        return None


def _citizen(action: str):
    gate = require(P.CITIZEN_READ_OWN, action=action)

    def dependency(request: Request, ctx: ServiceContext = Depends(gate),
                   token: str | None = Depends(oauth2)) -> tuple[ServiceContext, object]:
        return ctx, _generation(request, token)
    return dependency


@router.get("/citizen/me", response_model=CitizenRecord, tags=["citizen"],
            summary="The child's record (citizen view)")
def me(citizen: Annotated[tuple, Depends(_citizen("citizen.read"))]):
    return service.read_own(*citizen)


@router.get("/citizen/me/immunizations", response_model=list[CitizenDose], tags=["citizen"],
            responses={200: {"content": {"application/json": {"example": EXAMPLE_DOSES}}}},
            summary="The child's doses, voided and corrected ones marked (citizen view)")
def my_immunizations(citizen: Annotated[tuple, Depends(_citizen("citizen.immunizations"))]):
    return service.immunizations(*citizen)


@router.get("/citizen/me/access-log", response_model=AccessLogPage, tags=["citizen"],
            summary="Every access to the child's record: when, where, which role, why, emergency or not",
            description="Newest first, cursor-paginated. Logins with this child's health ID (successful or not) are "
                        "listed, so a login you did not make stands out; your own views are left out unless "
                        "`include_own_views=true`. Staff names are shown only where the registry is configured to.")
def my_access_log(request: Request, citizen: Annotated[tuple, Depends(_citizen("citizen.access_log"))],
                  cursor: Annotated[str | None, Query(max_length=200)] = None,
                  limit: Annotated[int | None, Query(ge=1, le=100)] = None,
                  include_own_views: bool = False):
    ctx, generation = citizen
    size = runtime(request).settings.page_size.default if limit is None else limit
    return service.access_log(ctx, generation, cursor, size, include_own_views)


@router.get("/citizen/me/certificate", response_model=CitizenCertificate, tags=["citizen"],
            summary="The child's vaccination certificate (HC1 for a QR code), issued now (citizen view)",
            description="A signed EU DCC / WHO DDCC:VS certificate for one target disease (`disease`, default polio), "
                        "from the latest completed dose administered here (reported doses are not certified), as a "
                        "clinic would issue it: a new UVCI on every call. 422 when there is no such dose. Audited as "
                        "`citizen.certificate`.")
def my_certificate(citizen: Annotated[tuple, Depends(_citizen("citizen.certificate"))],
                   disease: Annotated[str | None, Query(max_length=32, description="target disease, default polio")] = None):
    view, _ = service.certificate(*citizen, disease)
    return view


@router.post("/patients/{patient_id}/access-code", status_code=201, response_model=AccessCodeIssued, tags=["patients"],
             summary="Reissue a lost access code (the old one stops working)",
             description="For a clinic in the patient's capture scope. The new code is shown this once only.")
def reissue(patient_id: uuid.UUID,
            ctx: Annotated[ServiceContext, Depends(require(P.PATIENT_ISSUE_ACCESS_CODE))]):
    return service.reissue(ctx, patient_id)
