"""FHIR responses: application/fhir+json bodies, and OperationOutcome for every error on /fhir/R4.

Errors keep one mapping: the app's problem+json handlers (api/problems.py) decide the status and
headers as on /api/v1; `install` wraps each of them so that, under /fhir/R4, the same answer is
sent as an OperationOutcome (diagnostics and element path, never a submitted value). Exceptions
the handlers do not cover are answered by api/middleware.py (problem+json 500).
"""

from __future__ import annotations

import inspect
import json

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.fhir import negotiation
from registry import errors as e
from registry.fhir import outcome
from registry.fhir.mapping import FhirInvalid

PREFIX = "/fhir/R4"
FHIR_JSON = "application/fhir+json"
_RESOURCE_TYPES = ("Patient", "Immunization", "ImmunizationRecommendation")


class FhirJSON(JSONResponse):
    media_type = FHIR_JSON


def media_type(request: Request) -> str:
    """fhir+json unless the client prefers plain JSON (both carry the same body). The route's gate
    has already refused what cannot be served (406); an error answer falls back to fhir+json."""
    try:
        return negotiation.response_type(request)
    except FhirInvalid:
        return FHIR_JSON


def fhir_response(request: Request, body: dict, status: int = 200, headers: dict | None = None) -> FhirJSON:
    return FhirJSON(body, status_code=status, headers=headers, media_type=media_type(request))


def _resource_type(path: str) -> str | None:
    part = path[len(PREFIX):].strip("/").split("/", 1)[0]
    return part if part in _RESOURCE_TYPES else None


def _as_outcome(request: Request, exc: Exception, problem: JSONResponse) -> JSONResponse:
    rtype = _resource_type(request.url.path)
    if isinstance(exc, e.DomainError):
        status, body = outcome.from_error(exc, rtype)
        status = problem.status_code if not hasattr(exc, "status") else status
    elif isinstance(exc, RequestValidationError):
        first = (exc.errors() or [{}])[0]
        place, *loc = [str(p) for p in first.get("loc", ())] or ["body"]
        status = 400  # FHIR: a request that cannot be parsed is a 400
        if place == "body":
            where = ".".join([rtype or "Resource", *loc]) if first.get("type") != "json_invalid" else None
            body = outcome.operation_outcome(400, "the request body is not a valid FHIR JSON resource", where, code="structure")
        else:
            body = outcome.operation_outcome(400, f"invalid {place} value", ".".join(loc) or place, code="structure")
    else:
        status = problem.status_code
        detail = json.loads(problem.body).get("detail") if problem.body else None
        body = outcome.operation_outcome(status, detail)
    headers = {k: v for k, v in problem.headers.items() if k.lower() not in ("content-type", "content-length")}
    return FhirJSON(body, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    """Wrap the app's exception handlers: same decision, OperationOutcome under /fhir/R4."""
    for exc_class, handler in list(app.exception_handlers.items()):
        app.add_exception_handler(exc_class, _fhir_aware(handler))


def _fhir_aware(handler):
    async def handle(request: Request, exc: Exception):
        response = handler(request, exc)
        if inspect.isawaitable(response):
            response = await response
        if request.url.path == PREFIX or request.url.path.startswith(PREFIX + "/"):
            return _as_outcome(request, exc, response)
        return response

    return handle
