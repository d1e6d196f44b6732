"""Request dependencies: the unit of work, the permission gate, typed principals.

Invariants:
- The unit of work owns the transaction and commits *before* the response is sent
  (`Depends(..., scope="function")`): with FastAPI's default scope the commit would run after a
  200 had already gone out, so a failed audit commit would still have leaked the data.
- On any error it rolls back, then writes the request's refusal events again (or one event with
  the error's outcome if none was written) and commits them: refused attempts stay on record.
- A route gated by an audited permission that finishes without writing an audit event fails
  (500, rolled back): a forgotten audit call cannot silently pass.
- A POST with an `Idempotency-Key` (api/idempotency.py) commits when its response is stored with
  the data, not here: the unit of work hands its session over, and commits a replay's audit event.
- The async hot paths (read, search: registry/async_database.py) write through their own
  PostgreSQL connection and are committed before the route returns; their refusals are booked
  on the trail (`AuditTrail.refusal`) and written here, after the rollback, like every other.
  The unit of work is a coroutine: a request whose service never used the session costs no
  thread hand-off, and commit and close run in a worker thread only when the session connected.
- Routes declared `require(..., on_loop=True)` (register, record a dose) get, on PostgreSQL, a
  transaction on the async connection (`ServiceContext.unit`, registry/async_unit.py): committed
  here (or with the stored response of an Idempotency-Key), rolled back before the refusals are
  written, and its connection given back in every case. On SQLite they take the sync path.
- A staff token is refused (401) once its account's token generation has moved on (logout,
  deactivation, password reset, "end all sessions"), seen within `NHR_TOKEN_REVOCATION_CHECK_SECONDS`
  by every worker (registry/users/revocation.py).
- Every route declares `require(permission)` or `public`; `check_routes` refuses to start an
  app with a route that declares neither (fail closed).
- Recovery (registry/database.py): a request that cannot reach the database answers 503
  `database-unavailable` with Retry-After, never 500; a commit whose connection was lost while
  COMMIT was in flight answers 503 `outcome-unknown` (the change may have been made: a retry
  with the same Idempotency-Key is safe), never "nothing was changed".
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Annotated, AsyncIterator

from fastapi import Depends, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import OAuth2PasswordBearer
from starlette.concurrency import run_in_threadpool

from api import idempotency
from api.client_address import client_address
from registry import database
from registry import errors as e
from registry import rate_limit, text
from registry.async_unit import AsyncUnit
from registry.context import ServiceContext
from registry.runtime import Runtime
from registry.users import revocation
from registry.users.service import principal_from_claims
from security import tokens
from security.access.permissions import AUDITED, CITIZEN_ROLE, Permission
from security.access.principal import AccessContext, PurposeRejected, resolve_purpose
from security.audit import trail as audit
from security.audit.trail import AuditTrail, PatientRef

oauth2 = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)

UNSAFE_REASON = "(refused: the stated reason held control or bidirectional characters)"
_RESOURCE = {"patient": "Patient", "immunization": "Immunization", "audit": "AuditEvent", "user": "User", "auth": "User",
             "aefi": "AdverseEvent", "report": "Report"}


class AuditMissing(RuntimeError):
    """A route that must audit finished without writing its event."""


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime




@dataclass
class UnitOfWork:
    session: object
    trail: AuditTrail | None = None
    action: str | None = None
    subject: dict | None = None  # path ids of the record the request was about, for refusals at the gate
    idempotency: idempotency.Pending | idempotency.AsyncPending | None = None  # a claimed Idempotency-Key (api/idempotency.py)
    unit: AsyncUnit | None = None  # the transaction on the async connection (registry/async_unit.py), routes `on_loop`


def _outcome(exc: BaseException) -> str:
    return audit.INVALID if isinstance(exc, RequestValidationError) else e.audit_outcome(exc)


def _record_failure(session, uow: UnitOfWork, exc: BaseException) -> None:
    """One event for a request refused or failed before its service wrote one."""
    subject = uow.subject or {}
    patient_id = _uuid_or_none(subject.get("patient_id"))
    uow.trail.record(session, uow.action, _outcome(exc), resource_type=_RESOURCE.get(uow.action.split(".")[0], "Patient"),
                     resource_id=_uuid_or_none(subject.get("dose_id")) or patient_id,
                     patient=PatientRef(patient_id) if patient_id else None, detail={"reason": type(exc).__name__})


def _uuid_or_none(value) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value is not None else None
    except ValueError:
        return None


async def unit_of_work(request: Request) -> AsyncIterator[UnitOfWork]:
    """A coroutine, so that a route on the event loop (the async hot paths) pays no thread
    hand-off: the session connects only when a sync service first uses it, and only then do the
    commit and the close run in a worker thread."""
    session = runtime(request).sessions()
    uow = UnitOfWork(session)
    deferred = unit_deferred = False
    try:
        yield uow
        if uow.action and (uow.trail is None or uow.trail.recorded == 0):
            raise AuditMissing(f"route for {uow.action} wrote no audit event")
        if uow.idempotency is not None and uow.unit is not None:
            uow.idempotency.defer(session)  # the unit commits with the stored response (api/idempotency.AsyncPending)
            unit_deferred = True
        elif uow.idempotency is not None:
            uow.idempotency.defer(session)  # committed with the stored response, before it is sent
            deferred = True
            return
        elif uow.unit is not None:
            await uow.unit.commit()  # DatabaseUnavailable / OutcomeUnknown
        if session.in_transaction():
            await run_in_threadpool(database.commit, session)  # DatabaseUnavailable / OutcomeUnknown
    except idempotency.IdempotentReplay:
        if uow.unit is None or session.in_transaction():
            await run_in_threadpool(database.commit, session)  # the replay's audit event
        raise
    except BaseException as exc:
        failure = database.unavailable_error() if database.unavailable(exc) else exc
        if uow.unit is not None:
            await uow.unit.rollback()  # nothing of the request's writes stays; its refusals are written below
        await run_in_threadpool(_after_failure, session, uow, failure)
        if failure is exc:
            raise
        raise failure from None
    finally:
        if uow.unit is not None and not unit_deferred:
            await uow.unit.close()
        if not deferred:
            if session.in_transaction():
                await run_in_threadpool(session.close)
            elif session.identity_map or session.new or session.deleted:
                session.close()  # no connection held: nothing to give back but its objects
            # else: never used (the async hot paths): holds nothing, closing it would only cost CPU


def _after_failure(session, uow: UnitOfWork, exc: BaseException) -> None:
    """Roll back, then keep the refusals on record (and give an idempotency claim back)."""
    session.rollback()
    if uow.trail is not None and (uow.action or uow.idempotency is not None):
        try:
            if uow.idempotency is not None:  # a failed request gives its key back: a retry runs again
                idempotency.store.release(session, uow.idempotency.claim)
            if uow.action and uow.trail.replay_refusals(session) == 0:
                _record_failure(session, uow, exc)
            session.commit()
        except Exception:
            session.rollback()
            raise exc from None


UoW = Annotated[UnitOfWork, Depends(unit_of_work, scope="function")]


def require(permission: Permission, *, action: str | None = None, on_loop=False):
    """Gate a route: a valid token, a role holding `permission`, an allowed purpose of use.

    Returns the `ServiceContext` the route passes to the service. `action` names the audit
    action for refusals at the gate (defaults to the permission's audited action). `on_loop`:
    the route's service writes on the async unit of work (`ServiceContext.unit`, PostgreSQL;
    registry/async_unit.py), with its Idempotency-Key claimed and stored there too; or a coroutine
    function `(request, principal, runtime) -> bool` deciding it per request, once the caller is
    admitted and before the key is claimed (the batch upload: api/routes/sync.py)."""
    audit_action = action or AUDITED.get(permission)

    async def gate(
        request: Request,
        uow: UoW,
        token: Annotated[str | None, Depends(oauth2)],
        purpose: Annotated[str | None, Header(alias="X-Purpose-Of-Use")] = None,
        break_glass: Annotated[str | None, Header(alias="X-Break-Glass-Reason")] = None,
    ) -> ServiceContext:
        return await admit(request, uow, permission, audit_action, token, purpose, break_glass, on_loop=on_loop)

    gate.__nhr_permission__ = permission
    gate.__nhr_action__ = audit_action
    gate.__nhr_on_loop__ = on_loop  # api/hot_gate.py passes it on to `admit`
    return gate


async def admit(request: Request, uow: UnitOfWork, permission: Permission, audit_action: str | None,
                token: str | None, purpose: str | None, break_glass: str | None, *,
                on_loop=False) -> ServiceContext:
    """The gate itself, shared by the dependency above and the hot gate (api/hot_gate.py), which
    calls it without FastAPI's dependency resolution: authenticate (incl. the token generation),
    open the trail, check the role, the purpose of use and break-glass, rate-limit, claim an
    Idempotency-Key. Raises the refusal; the unit of work audits it."""
    # Headers are validated here, after the trail exists, so that a malformed one is an
    # audited refusal rather than a 422 raised before anyone is watching.
    rt = runtime(request)
    rid, client = request.state.request_id, client_address(request)
    uow.trail = AuditTrail(AccessContext(None, None, rid, client))
    uow.action = audit_action
    uow.subject = {k: v for k, v in request.path_params.items() if k in ("patient_id", "dose_id")}
    if not token:
        raise e.Unauthenticated("a bearer token is required")
    try:
        claims = rt.verified_tokens.verify(token)
        principal = principal_from_claims(claims)
    except (tokens.InvalidToken, KeyError, ValueError):
        raise e.Unauthenticated("the token is invalid or expired") from None
    if principal.role != CITIZEN_ROLE and not await _current_generation(rt, principal.user_id, claims):
        raise e.Unauthenticated("the token is invalid or expired")  # revoked: logout, deactivation, reset
    # Order matters: the purpose is resolved for the record (kept only if valid: an unchecked
    # header could be anything), then the role decides (403 whatever the headers say), and only
    # then are header errors reported (422).
    reason = break_glass.strip()[:500] if break_glass is not None else None
    unsafe = reason is not None and not text.is_safe(reason, newlines=False)
    if unsafe:  # kept on record as an attempt, without the characters (registry/text.py)
        reason = UNSAFE_REASON
    try:
        resolved, purpose_error = resolve_purpose(principal.role, purpose, reason), None
    except PurposeRejected as exc:
        resolved, purpose_error = None, exc
    uow.trail.context = AccessContext(principal, resolved, rid, client, reason)
    if not principal.can(permission):
        raise e.Forbidden("your role does not allow this")
    if reason and not principal.can(Permission.PATIENT_BREAK_GLASS):
        raise e.Forbidden("your role cannot use break-glass access")
    if reason is not None and len(reason) < 10:
        raise e.InvalidInput("a break-glass reason must be 10 to 500 characters", field="X-Break-Glass-Reason")
    if unsafe:
        raise e.InvalidInput(text.MESSAGE, field="X-Break-Glass-Reason")
    if purpose_error is not None:
        raise e.InvalidInput(str(purpose_error), field="X-Purpose-Of-Use")
    await rate_limit.check(rt, principal, permission)  # 429 past the principal's window (registry/rate_limit.py)
    aio = rt.aio
    if on_loop and aio is not None and (on_loop is True or await on_loop(request, principal, rt)):
        uow.unit = AsyncUnit(aio)
    await idempotency.begin(request, uow, principal)
    if uow.unit is not None:
        return ServiceContext(uow.session, rt, uow.trail, aio=aio, unit=uow.unit)
    return ServiceContext(uow.session, rt, uow.trail, aio=None if uow.idempotency is not None else aio)


async def _current_generation(rt: Runtime, user_id: uuid.UUID, claims: dict) -> bool:
    """Whether a staff token is of its account's current generation (registry/users/revocation.py):
    from the per-process cache, or one read in a worker thread when the cached copy is stale."""
    generation = rt.token_generations.cached(user_id)
    if generation is revocation.STALE:
        generation = await _load_once(rt.token_generations, user_id)
    return revocation.accepts(claims, generation)


_LOADING: dict[tuple, asyncio.Future] = {}


async def _load_once(cache: revocation.TokenGenerations, user_id: uuid.UUID):
    """One read of an account's generation at a time per process and event loop: the requests that
    find the entry stale while it is being read wait for that read instead of each taking a thread
    and a connection (measured: 11% of the audited read's CPU at 32 connections went to those
    hand-offs). The bound holds: the shared read started after the entry went stale."""
    key = (id(asyncio.get_running_loop()), id(cache), user_id)
    task = _LOADING.get(key)
    if task is None:
        task = _LOADING[key] = asyncio.ensure_future(run_in_threadpool(cache.load, user_id))
        task.add_done_callback(lambda _: _LOADING.pop(key, None))
    return await asyncio.shield(task)  # a waiter that goes away does not cancel the others' read


def public() -> None:
    """Marks a route as deliberately open to anyone (health checks, login, the API docs)."""


public.__nhr_public__ = True


@dataclass(frozen=True)
class ServedRoute:
    """A route as clients reach it: its served path (with include-time prefixes) and the
    dependencies added when its router was included."""

    path: str
    methods: frozenset
    route: APIRoute
    include_dependencies: tuple = ()


def _declaration(call) -> str | None:
    if getattr(call, "__nhr_public__", False):
        return "public"
    permission = getattr(call, "__nhr_permission__", None)
    return str(permission) if permission else None


def declared_access(route: ServedRoute | APIRoute) -> str | None:
    """'public', the permission value, or None if the route declares neither."""
    api_route = route.route if isinstance(route, ServedRoute) else route
    for dep in getattr(route, "include_dependencies", ()):
        found = _declaration(getattr(dep, "dependency", None))
        if found:
            return found
    stack = list(api_route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        found = _declaration(dep.call)
        if found:
            return found
        stack.extend(dep.dependencies)
    return None


def iter_api_routes(routes):
    """Every APIRoute as served. FastAPI >= 0.160 keeps included routers as lazy
    `_IncludedRouter` objects whose `effective_candidates()` carry the served path; older
    versions copy routes with the prefix applied. Mounts are descended into."""
    for r in routes:
        if isinstance(r, APIRoute):
            yield ServedRoute(r.path, frozenset(r.methods), r)
        elif hasattr(r, "effective_candidates"):
            deps = tuple(getattr(r.include_context, "dependencies", None) or ())
            for c in r.effective_candidates():
                if hasattr(c, "effective_candidates"):
                    yield from iter_api_routes([c])
                elif isinstance(getattr(c, "original_route", None), APIRoute):
                    yield ServedRoute(c.path, frozenset(c.original_route.methods), c.original_route, deps)
        elif getattr(r, "routes", None):
            yield from iter_api_routes(r.routes)


def check_routes(routes) -> None:
    missing = [f"{sorted(r.methods)} {r.path}" for r in iter_api_routes(routes) if declared_access(r) is None]
    if missing:
        raise RuntimeError(f"routes without a declared permission or public marker: {missing}")


Public = Depends(public)


def new_request_id(header: str | None) -> str:
    if header and 8 <= len(header) <= 64 and header.replace("-", "").isalnum():
        return header
    return uuid.uuid4().hex
