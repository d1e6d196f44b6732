"""Public certificate check: paste the QR text ("HC1:...") and see valid or the first failed check.
The same service as `POST /api/v1/certificates/verify`; nothing of the payload is logged, and the
holder's name and birth date are shown only for a valid certificate (as the API returns them),
so the verifier can compare them with the person in front of them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from starlette.concurrency import run_in_threadpool

from api.console.gate import check_anonymous_csrf
from api.console.session_routes import anonymous_form
from api.deps import Public, UoW, runtime
from api.routing import GatedRoute
from registry.certificates import service

router = APIRouter(route_class=GatedRoute, include_in_schema=False)


@router.get("/verify", dependencies=[Public])
def verify_form(request: Request):
    return anonymous_form(request, "verify.html")


@router.post("/verify", dependencies=[Public])
async def verify(request: Request, uow: UoW, hc1: Annotated[str, Form(max_length=8192)]):
    await check_anonymous_csrf(request, uow)
    v = await run_in_threadpool(service.verify, uow.session, runtime(request), hc1.strip())
    holder = _holder(v.dcc) if v.valid else None
    return anonymous_form(request, "verify.html", result=v, holder=holder)


def _holder(dcc) -> dict | None:
    """Name, birth date and vaccinations of a valid EU DCC payload (as recorded; never logged)."""
    try:
        nam = dcc.get("nam", {})
        doses = [{"target": v.get("tg"), "dose": v.get("dn"), "of": v.get("sd"), "date": v.get("dt")} for v in dcc.get("v", ())]
        return {"name": " ".join(x for x in (nam.get("gn"), nam.get("fn")) if x), "dob": dcc.get("dob"), "doses": doses}
    except AttributeError:
        return None
