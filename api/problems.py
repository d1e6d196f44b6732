"""RFC 9457 problem+json for every error, mapped from domain errors in this one place.

Invariants:
- A problem names the field that is wrong (`errors[].field` and a JSON `pointer`) and the
  rule it broke; it never echoes the submitted value, never includes a stack trace, and
  unexpected errors are logged by class and location only (a message may carry data).
"""

from __future__ import annotations

import logging
import traceback

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from registry import errors as e
from security.crypto.errors import DecryptionError, KeyUnavailable

log = logging.getLogger("nhr.api")
MEDIA_TYPE = "application/problem+json"
_CORE_MEMBERS = {"type", "title", "status", "detail", "instance", "request_id", "errors"}

STATUS = {
    e.Unauthenticated: (401, "unauthenticated", "Authentication required"),
    e.Forbidden: (403, "forbidden", "Not allowed"),
    e.NotFound: (404, "not-found", "Not found"),
    e.Conflict: (409, "conflict", "Conflict"),
    e.PreconditionFailed: (412, "precondition-failed", "Precondition failed"),
    e.InvalidInput: (422, "invalid-input", "Invalid input"),
    e.PreconditionRequired: (428, "precondition-required", "Precondition required"),
    e.TooManyAttempts: (429, "too-many-attempts", "Too many attempts"),
    e.DatabaseUnavailable: (503, "database-unavailable", "Database unavailable"),
    e.OutcomeUnknown: (503, "outcome-unknown", "Outcome unknown"),
    e.ServiceUnavailable: (503, "unavailable", "Service unavailable"),
}


def problem(status: int, slug: str, title: str, detail: str | None, request: Request, *, errors: list | None = None,
            headers: dict | None = None, extensions: dict | None = None) -> JSONResponse:
    body = {"type": f"urn:nhr:problem:{slug}", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    route = request.scope.get("route")
    if route is not None:  # the route *template*: the concrete path may carry what the caller typed
        body["instance"] = route.path
    rid = getattr(request.state, "request_id", None)
    if rid:
        body["request_id"] = rid
    if errors:
        body["errors"] = errors
    body.update(extensions or {})
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _field_error(location: tuple) -> dict:
    where, *path = location if location else ("body",)
    path = [str(p) for p in path]
    if where == "body":
        return {"field": ".".join(path) or "body", "pointer": "#/" + "/".join(path), "in": "body"}
    return {"field": ".".join(path) or where, "in": where}


async def _domain(request: Request, exc: e.DomainError) -> JSONResponse:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            status, slug, title = STATUS[cls]
            break
    else:  # pragma: no cover - every DomainError subclass is mapped
        status, slug, title = 400, "bad-request", "Bad request"
    errors = None
    if exc.field:
        loc = "header" if exc.field[:1].isupper() else "body"
        errors = [{"field": exc.field, **({"pointer": "#/" + exc.field.replace(".", "/")} if loc == "body" else {}),
                   "in": loc, "detail": exc.message}]
    headers = {}
    if isinstance(exc, e.Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, (e.TooManyAttempts, e.ServiceUnavailable)) and exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    # RFC 9457 extension members a domain error chooses to carry (e.g. a refused dose's rule `reason`)
    extensions = {k: v for k, v in (getattr(exc, "extensions", None) or {}).items() if k not in _CORE_MEMBERS}
    return problem(status, slug, title, exc.message, request, errors=errors, headers=headers or None, extensions=extensions)


async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = []
    for err in exc.errors():
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        if err.get("type") == "json_invalid":  # its location is a character offset, not a field
            errors.append({"field": "body", "pointer": "#", "in": "body", "detail": "the body is not valid JSON"})
            continue
        errors.append({**_field_error(tuple(err.get("loc", ()))), "detail": msg})
    fields = ", ".join(x["field"] for x in errors)
    return problem(422, "invalid-input", "Invalid input", f"invalid value for: {fields}", request, errors=errors)


async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if isinstance(exc.__cause__, UnicodeError):
        # FastAPI answers a body that is not UTF-8 (or another JSON encoding) with a bare 400 "error
        # parsing the body"; it is invalid JSON like any other, and gets the same 422 and shape.
        return await _validation(request, RequestValidationError([{"type": "json_invalid", "loc": ("body", 0),
                                                                   "msg": "JSON decode error"}]))
    slug = {404: "not-found", 405: "method-not-allowed", 401: "unauthenticated"}.get(exc.status_code, "http-error")
    detail = exc.detail if isinstance(exc.detail, str) else None
    return problem(exc.status_code, slug, detail or "HTTP error", detail, request, headers=getattr(exc, "headers", None))


def _where(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    last = tb[-1] if tb else None
    return f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno}" if last else "?"


async def _decryption(request: Request, exc: DecryptionError) -> JSONResponse:
    # The message names table, column and the opaque row id (never a value), so it is safe to log.
    log.error("integrity failure: %s (at %s) request_id=%s", exc, _where(exc), getattr(request.state, "request_id", "-"))
    return problem(500, "integrity-failure", "Stored data failed an integrity check", "the record could not be decrypted; "
                   "this has been logged for the operators", request)


async def _keys(request: Request, exc: KeyUnavailable) -> JSONResponse:
    log.error("key unavailable at %s request_id=%s", _where(exc), getattr(request.state, "request_id", "-"))
    return problem(503, "keys-unavailable", "Service unavailable", "encryption keys are not available", request)


def install(app: FastAPI) -> None:
    app.add_exception_handler(e.DomainError, _domain)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(DecryptionError, _decryption)
    app.add_exception_handler(KeyUnavailable, _keys)
    # Other exceptions are answered by api/middleware.py, which logs class and location only.
