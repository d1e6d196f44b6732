"""Errors on console pages are pages, not problem+json: the same decision (status, message that
names fields and rules, never a submitted value) rendered in the reader's language. A page that
needs a session redirects to the login form. Other paths keep the app's handlers."""

from __future__ import annotations

import inspect

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.console.gate import LoginRequired, anonymous_csrf, cookie_name, set_cookie
from api.console.templating import render
from registry import errors as e

PREFIXES = ("/console", "/verify", "/my")

_STATUS = [(LoginRequired, 401), (e.Unauthenticated, 401), (e.Forbidden, 403), (e.TooManyAttempts, 429), (e.NotFound, 404),
           (e.InvalidInput, 422), (e.Conflict, 409), (e.ServiceUnavailable, 503)]


def is_console(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in PREFIXES)


def _status(exc: BaseException) -> int:
    if isinstance(exc, StarletteHTTPException):
        return exc.status_code
    if isinstance(exc, RequestValidationError):
        return 422
    return next((code for cls, code in _STATUS if isinstance(exc, cls)), 500)


def _message(exc: BaseException) -> str | None:
    if isinstance(exc, e.DomainError):
        return exc.message
    if isinstance(exc, RequestValidationError):
        fields = sorted({str(err.get("loc", ("", ""))[-1]) for err in exc.errors()})
        return "check these fields: " + ", ".join(fields)
    return None


def page_for(request: Request, exc: BaseException):
    if isinstance(exc, LoginRequired):
        return RedirectResponse("/my/login" if request.url.path.startswith("/my") else "/console/login", status_code=303)
    status = _status(exc)
    if request.url.path in ("/console/login", "/my/login") and status in (401, 429):
        token, new = anonymous_csrf(request)
        template = "login.html" if request.url.path == "/console/login" else "my_login.html"
        response = render(request, template, status_code=status, csrf=token, error=_message(exc))
        if new:
            set_cookie(request, response, "nhr_csrf", token, None)
        if status == 429 and isinstance(exc, e.TooManyAttempts):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response
    return render(request, "error.html", status_code=status, status=status, message=_message(exc),
                  reason=getattr(exc, "reason", None),  # a stable code (linkage conflicts), never a value
                  signed_in=bool(request.cookies.get(cookie_name(request, "nhr_session"))))


def _console_aware(handler):
    async def handle(request: Request, exc: Exception):
        if is_console(request.url.path):
            return page_for(request, exc)
        response = handler(request, exc)
        return await response if inspect.isawaitable(response) else response

    return handle


def install(app: FastAPI) -> None:
    for exc_class, handler in list(app.exception_handlers.items()):
        app.add_exception_handler(exc_class, _console_aware(handler))
