"""Vaccination certificate routes (EU DCC / WHO DDCC:VS HCERT, "HC1:").

- Issuing is gated and audited (`certificate.issue`, one event per request, the UVCI in its
  detail). Each call issues a new certificate with a new UVCI: the response is never cached.
- Revoking is gated and audited (`certificate.revoke`). The UVCI's "#" must be sent as %23 (NHR's
  UVCIs contain no "/", see registry/certificates/payload.new_uvci).
- Verifying and the trust list are *public*: a school, employer or border officer checking a
  certificate has no registry account, and the registry answers only about the text presented
  (the signature, validity and revocation of what the holder already shows). No patient record is
  read, nothing of the payload is logged, and the input is bounded (8 kB text, 64 kB inflated).
- Responses are `Cache-Control: no-store` (set for every API response by the middleware).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, Field

from api.deps import Public, require
from api.routing import GatedRoute
from registry.certificates import card, service
from registry.certificates.models import REVOCATION_REASONS
from registry.context import ServiceContext
from security.access.permissions import Permission as P
from security.certificates import hcert

router = APIRouter(route_class=GatedRoute, prefix="/api/v1", tags=["certificates"])


class IssuedView(BaseModel):
    uvci: str
    hc1: str
    disease: str
    issued_at: datetime
    expires_at: datetime


class RevokeBody(BaseModel):
    reason: Literal[REVOCATION_REASONS] = Field(description="why the certificate is withdrawn")  # type: ignore[valid-type]


class RevokedView(BaseModel):
    uvci: str
    revoked_at: datetime
    reason: str


class VerifyBody(BaseModel):
    hc1: str = Field(max_length=8192, description='the QR code text, starting "HC1:"')


class VerifyError(BaseModel):
    code: str = Field(description="the first check that failed, in verification order: " + ", ".join(hcert.ERROR_CODES)
                      + " (`schema`: the payload breaks the EU DCC JSON schema; `signer_type_mismatch`: the signer's "
                      "extended key usage does not allow this certificate type; `expired`: at or after `exp`)")
    message: str = Field(description="what failed, in words; never a payload value")


class VerificationView(BaseModel):
    valid: bool
    error: VerifyError | None = None
    kid: str | None = None
    issuer: str | None = None
    issued_at: datetime | None = None
    expires_at: datetime | None = None
    certificate: dict[str, Any] | None = Field(None, description="the DCC payload, only when valid")


@router.get("/patients/{patient_id}/certificate", summary="Issue a signed vaccination certificate (HC1, QR PNG/SVG, HTML card)",
            response_model=IssuedView, responses={200: {"content": {"image/png": {}, "image/svg+xml": {}, "text/html": {}}}})
def issue(patient_id: uuid.UUID, ctx: Annotated[ServiceContext, Depends(require(P.CERTIFICATE_ISSUE))],
          format: Annotated[Literal["hc1", "png", "svg", "html"], Query()] = "hc1",
          disease: Annotated[str | None, Query(max_length=32, description="target disease, default polio")] = None):
    issued = service.issue(ctx, patient_id, disease)
    if format == "png":
        return Response(card.qr_png(issued.hc1), media_type="image/png")
    if format == "svg":
        return Response(card.qr_svg(issued.hc1), media_type="image/svg+xml")
    if format == "html":
        return Response(card.html_card(issued), media_type="text/html; charset=utf-8")
    view = IssuedView(uvci=issued.uvci, hc1=issued.hc1, disease=issued.disease, issued_at=issued.issued_at,
                      expires_at=issued.expires_at)
    return Response(view.model_dump_json(), media_type="application/json")


@router.post("/certificates/{uvci}/revoke", response_model=RevokedView, summary="Revoke an issued certificate")
def revoke(uvci: Annotated[str, Path(max_length=80)], body: RevokeBody,
           ctx: Annotated[ServiceContext, Depends(require(P.CERTIFICATE_REVOKE))]):
    return service.revoke(ctx, uvci, body.reason)


@router.post("/certificates/verify", response_model=VerificationView, dependencies=[Public],
             summary="Verify an HC1 certificate: signature (trust list), validity, revocation (public)")
def verify(body: VerifyBody, request: Request):
    rt = request.app.state.runtime
    with rt.sessions() as session:
        v = service.verify(session, rt, body.hc1)
    return VerificationView(valid=v.valid, error=VerifyError(code=v.code, message=v.message) if v.code else None,
                            kid=v.kid, issuer=v.issuer, issued_at=v.issued_at, expires_at=v.expires_at,
                            certificate=_plain(v.dcc) if v.valid else None)


@router.get("/certificates/trust-list", dependencies=[Public],
            summary="The registry's trust list (document signer certificates, revoked UVCI hashes) for offline verifiers")
def trust_list(request: Request):
    rt = request.app.state.runtime
    with rt.sessions() as session:
        return Response(service.trust_list(rt, session).to_json(), media_type="application/json")


def _plain(value):
    """CBOR-decoded values (frozendict, tuples, bytes) -> JSON-able ones."""
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
