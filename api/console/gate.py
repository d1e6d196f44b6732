"""The console's gate: the same permission check, purpose of use, break-glass rules and unit of
work as `api.deps.require`, with the principal taken from a server-side session cookie instead of
a bearer token, and a CSRF check on every POST.

Invariants:
- The session cookie is HttpOnly and SameSite=Strict; `Secure` (and then `__Host-` prefixed)
  unless `NHR_CONSOLE_SECURE_COOKIE` says otherwise or the app runs with `env=development`.
- Every POST carries a CSRF token in its body: the session's secret, or for the anonymous forms
  (login, /verify) a double-submit value that must equal the `csrf` cookie. A missing or wrong
  token is refused (403) and audited (`console.csrf`), before any service runs.
- A page gated by an audited permission must write its audit event (the unit of work enforces it).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from api.client_address import client_address
from api.deps import UnitOfWork, UoW, runtime
from registry import errors as e
from registry.console_sessions import service as sessions
from registry.console_sessions.schemas import LiveSession
from registry.context import ServiceContext
from security.access.permissions import AUDITED, Permission
from security.access.principal import AccessContext, PurposeRejected, resolve_purpose
from security.audit import trail as audit
from security.audit.trail import AuditTrail


class LoginRequired(e.Unauthenticated):
    """No live session: the page answers with a redirect to the login form."""


class CsrfRefused(e.Forbidden):
    """A POST without the right CSRF token."""


def secure(request: Request) -> bool:
    s = runtime(request).settings
    return s.console.secure_cookie if s.console.secure_cookie is not None else s.env != "development"


def cookie_name(request: Request, base: str) -> str:
    return f"__Host-{base}" if secure(request) else base


def set_cookie(request: Request, response, base: str, value: str, max_age: int | None) -> None:
    response.set_cookie(cookie_name(request, base), value, max_age=max_age, path="/", secure=secure(request),
                        httponly=True, samesite="strict")


def session_token(request: Request) -> str | None:
    return request.cookies.get(cookie_name(request, "nhr_session"))


def anonymous_csrf(request: Request) -> tuple[str, bool]:
    """(token, is_new) for a form shown to someone without a session."""
    current = request.cookies.get(cookie_name(request, "nhr_csrf"))
    if current and 20 <= len(current) <= 64:
        return current, False
    return secrets.token_urlsafe(24), True


def _refuse_csrf(uow: UnitOfWork, request: Request) -> None:
    """Book the refusal (replayed after the rollback) and raise."""
    if uow.trail is None:
        uow.trail = AuditTrail(AccessContext(None, None, request.state.request_id, client_address(request)))
    uow.action = uow.action or "console.csrf"
    uow.trail.record(uow.session, "console.csrf", audit.DENIED, resource_type="Session",
                     detail={"reason": "missing or wrong CSRF token", "page": request.scope.get("route").path
                             if request.scope.get("route") else None})
    raise CsrfRefused("the form has expired or did not come from this site; open the page again")


async def check_anonymous_csrf(request: Request, uow: UnitOfWork) -> None:
    form = await request.form()
    if not sessions.csrf_ok(request.cookies.get(cookie_name(request, "nhr_csrf")), form.get("csrf")):
        await run_in_threadpool(_refuse_csrf, uow, request)


@dataclass
class ConsoleCall:
    """What a console route gets from its gate: the live session, and a way to build the service
    context (with a stated purpose or a break-glass reason, as the API's headers would)."""

    request: Request
    uow: UnitOfWork
    live: LiveSession
    permission: Permission

    @property
    def principal(self):
        return self.live.principal

    @property
    def csrf(self) -> str:
        return self.live.csrf

    def context(self, *, break_glass_reason: str | None = None) -> ServiceContext:
        """The same checks, in the same order, as `api.deps.require` applies to the headers."""
        p, trail = self.live.principal, self.uow.trail
        reason = break_glass_reason.strip()[:500] if break_glass_reason and break_glass_reason.strip() else None
        try:
            resolved, purpose_error = resolve_purpose(p.role, None, reason), None
        except PurposeRejected as exc:
            resolved, purpose_error = None, exc
        trail.context = AccessContext(p, resolved, trail.context.request_id, trail.context.client_address, reason)
        if reason and not p.can(Permission.PATIENT_BREAK_GLASS):
            raise e.Forbidden("your role cannot use break-glass access")
        if reason is not None and len(reason) < 10:
            raise e.InvalidInput("a break-glass reason must be 10 to 500 characters", field="reason")
        if purpose_error is not None:
            raise e.InvalidInput(str(purpose_error), field="purpose")
        return ServiceContext(self.uow.session, runtime(self.request), trail, aio=None)


def console_require(permission: Permission, *, action: str | None = None, audited: bool = True):
    """Gate a console page: a live session, a role holding `permission`, a CSRF token on POST.
    `audited=False` for a page that shows nothing but a form (it calls no service)."""
    audit_action = (action or AUDITED.get(permission)) if audited else None

    async def console_gate(request: Request, uow: UoW) -> ConsoleCall:
        rt = runtime(request)
        uow.trail = AuditTrail(AccessContext(None, None, request.state.request_id, client_address(request)))
        uow.action = audit_action
        live = await run_in_threadpool(sessions.resolve, uow.session, rt, session_token(request))
        if live is None:
            raise LoginRequired("please log in")
        try:
            purpose = resolve_purpose(live.principal.role, None, None)
        except PurposeRejected:
            purpose = None
        uow.trail.context = AccessContext(live.principal, purpose, uow.trail.context.request_id, uow.trail.context.client_address)
        if request.method == "POST":
            form = await request.form()
            if not sessions.csrf_ok(live.csrf, form.get("csrf")):
                await run_in_threadpool(_refuse_csrf, uow, request)
        if not live.principal.can(permission):
            raise e.Forbidden("your role does not allow this")
        return ConsoleCall(request, uow, live, permission)

    console_gate.__nhr_permission__ = permission
    return console_gate


def Gate(permission: Permission, *, action: str | None = None, audited: bool = True):
    return Depends(console_require(permission, action=action, audited=audited))
