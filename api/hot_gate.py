"""The hot routes' gate: one coroutine instead of FastAPI's per-request dependency resolution.

Why (issue 17): on the audited read, FastAPI's `solve_dependencies` (the gate, the unit of work,
the token, two headers), the router, the exception and exit-stack wrappers cost more CPU than the
registry's own work. A route marked `@hot` is served here, by an ASGI layer that sits inside
admission (api/admission.py) and outside the idempotency layer, and that:

1. matches the route's served path and method (the path's parameters are validated with the
   route's own types), reads the body (already bounded by BodyLimitMiddleware) and validates it
   with the route's own model;
2. opens the SAME unit of work (`api.deps.unit_of_work`) and calls the SAME gate
   (`api.deps.admit`: bearer token, token generation, role, purpose of use, break-glass, rate
   limit) with the permission and audit action the route declares through `require(...)`;
3. calls the route's endpoint with the service context and its parameters, commits or audits the
   refusal as the unit of work always does, and maps errors with the app's own exception handlers
   (api/problems.py), so bodies, headers and audit events are those of the dependency path.

Invariants:
- Fail closed: a route is hot only if it declares its permission through `require` (the same
  declaration `check_routes` demands); `install` refuses to start an app with a `@hot` route that
  has none, or whose parameters this module does not know how to pass (query, header, cookie
  parameters, other dependencies).
- The route stays an ordinary FastAPI route: the OpenAPI document, the route check, and every
  request this layer does not take are unchanged. It hands the request, untouched, to the normal
  path whenever that path's answer could differ in a way this layer does not reproduce: a path
  parameter or a body that does not validate (FastAPI's 422 and its audited refusal), a body
  that is not `application/json`, an `Idempotency-Key`, a header that appears twice or empty,
  a `root_path`, dependency overrides. That decision is taken before anything is counted,
  audited or written.
- What the request id, security headers, access log, metrics, body limit and admission layers
  do is unchanged: they wrap this one.
- `NHR_HOT_GATE=false` switches it off (every request then goes through dependency resolution);
  tests/test_hot_gate.py runs a table of cases through both and compares status, body and the
  audit event.

To adopt it on another route: mark the endpoint `@hot` (below the router decorator); it must be
`async`, take its `ServiceContext` from `Depends(require(...))`, and return a `Response`.
"""

from __future__ import annotations

import inspect
import json
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Callable

from fastapi.security.utils import get_authorization_scheme_param
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import compile_path

from api.deps import admit, iter_api_routes, unit_of_work
from api.idempotency import store as idempotency_store

_HOT = "__nhr_hot__"
_unit_of_work = asynccontextmanager(unit_of_work)
# The headers the gate reads (FastAPI takes the first of repeated ones; this layer declines them)
_AUTH, _PURPOSE, _BREAK_GLASS = b"authorization", b"x-purpose-of-use", b"x-break-glass-reason"
_IDEMPOTENCY, _CONTENT_TYPE = idempotency_store.HEADER.lower().encode(), b"content-type"
_WATCHED = frozenset({_AUTH, _PURPOSE, _BREAK_GLASS, _IDEMPOTENCY, _CONTENT_TYPE})
_GATE_PARAMS = {"request", "uow", "token", "purpose", "break_glass"}


def hot(endpoint: Callable) -> Callable:
    """Mark a route's endpoint to be served by the hot gate (see the module docstring)."""
    setattr(endpoint, _HOT, True)
    return endpoint


@dataclass(frozen=True)
class HotRoute:
    route: Any  # the APIRoute: scope["route"] for problem `instance` and the access log's template
    method: str
    pattern: Any
    permission: Any
    action: str | None
    ctx_name: str
    path_params: tuple[tuple[str, TypeAdapter], ...]
    body: tuple[str, type[BaseModel]] | None
    request_name: str | None


def plan(served) -> HotRoute:
    """How to serve one `@hot` route, or RuntimeError if it cannot be served here (fail closed)."""
    route, where = served.route, f"{sorted(served.methods)} {served.path}"
    d = route.dependant
    gates = [x for x in d.dependencies if getattr(x.call, "__nhr_permission__", None) is not None]
    if served.include_dependencies or len(gates) != 1 or len(d.dependencies) != 1:
        raise RuntimeError(f"hot route {where}: needs exactly one dependency, `require(permission)`")
    gate = gates[0]
    own = {p.name for p in gate.path_params + gate.query_params + gate.header_params + gate.cookie_params + gate.body_params}
    own |= {x.name for x in gate.dependencies} | {gate.request_param_name}
    if not own <= _GATE_PARAMS:
        raise RuntimeError(f"hot route {where}: its gate is not `require`'s ({sorted(own - _GATE_PARAMS)})")
    if d.query_params or d.header_params or d.cookie_params or len(d.body_params) > 1 or len(served.methods) != 1 \
            or d.response_param_name or d.background_tasks_param_name or d.http_connection_param_name:
        raise RuntimeError(f"hot route {where}: only path parameters, one JSON body and the Request are passed")
    body = None
    if d.body_params:
        model = d.body_params[0].field_info.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or route._embed_body_fields:
            raise RuntimeError(f"hot route {where}: the body must be one pydantic model")
        body = (d.body_params[0].name, model)
    regex, _, convertors = compile_path(served.path)
    if any(type(c).__name__ != "StringConvertor" for c in convertors.values()):
        raise RuntimeError(f"hot route {where}: only plain {{name}} path parameters")
    return HotRoute(route=route, method=next(iter(served.methods)), pattern=regex, permission=gate.call.__nhr_permission__,
                    action=getattr(gate.call, "__nhr_action__", None), ctx_name=gate.name,
                    path_params=tuple((p.name, TypeAdapter(p.field_info.annotation)) for p in d.path_params),
                    body=body, request_name=d.request_param_name)


def hot_routes(app) -> tuple[HotRoute, ...]:
    return tuple(plan(r) for r in iter_api_routes(app.routes) if getattr(r.route.endpoint, _HOT, False))


class HotGateMiddleware:
    """Serves the planned routes (see the module docstring); passes everything else on."""

    def __init__(self, app, routes: tuple[HotRoute, ...]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not scope.get("root_path"):
            method, path = scope["method"], scope["path"]
            for h in self.routes:
                if h.method == method and (m := h.pattern.match(path)) is not None:
                    if not scope["app"].dependency_overrides:
                        await self._serve(h, m.groupdict(), scope, receive, send)
                        return
                    break
        await self.app(scope, receive, send)

    async def _serve(self, h: HotRoute, params: dict, scope, receive, send) -> None:
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            if name in _WATCHED:
                if name in headers or not value:
                    return await self.app(scope, receive, send)  # repeated or empty: FastAPI's reading decides
                headers[name] = value
        if _IDEMPOTENCY in headers:
            return await self.app(scope, receive, send)  # the claim needs IdempotencyMiddleware
        kwargs = {}
        for name, adapter in h.path_params:
            try:
                kwargs[name] = adapter.validate_python(params[name])
            except ValidationError:
                return await self.app(scope, receive, send)  # FastAPI's 422, after the gate (audited)
        if h.body is not None:
            raw = await _read_body(receive)
            if raw is None:
                return  # the client went away before its body arrived: nothing was done, nobody to answer
            receive = _replay(raw, receive)
            name, model = h.body
            media = headers.get(_CONTENT_TYPE, b"").split(b";", 1)[0].strip().lower()
            try:
                if media != b"application/json":
                    raise ValueError("not JSON")
                kwargs[name] = model.model_validate(json.loads(raw))
            except (ValueError, ValidationError):  # json's errors are ValueErrors
                return await self.app(scope, receive, send)
        scope["route"], scope["path_params"] = h.route, params
        request = Request(scope, receive, send)
        if h.request_name:
            kwargs[h.request_name] = request
        scheme, token = get_authorization_scheme_param(headers[_AUTH].decode("latin-1")) if _AUTH in headers else ("", "")
        purpose, reason = headers.get(_PURPOSE), headers.get(_BREAK_GLASS)
        try:
            async with _unit_of_work(request) as uow:
                kwargs[h.ctx_name] = await admit(
                    request, uow, h.permission, h.action, token if scheme.lower() == "bearer" else None,
                    purpose.decode("latin-1") if purpose is not None else None,
                    reason.decode("latin-1") if reason is not None else None)
                response = await h.route.endpoint(**kwargs)
            if not isinstance(response, Response):
                raise TypeError("a hot route returns a Response")
        except Exception as exc:  # noqa: BLE001 - answered by the app's handlers, or re-raised
            handler = _handler(scope["app"].exception_handlers, exc)
            if handler is None:
                raise
            response = await handler(request, exc) if _is_async(handler) else await run_in_threadpool(handler, request, exc)
        await response(scope, receive, send)


def _handler(handlers: dict, exc: Exception):
    """The app's handler for `exc`, looked up as Starlette's ExceptionMiddleware does."""
    if isinstance(exc, HTTPException) and exc.status_code in handlers:
        return handlers[exc.status_code]
    for cls in type(exc).__mro__:
        if cls in handlers:
            return handlers[cls]
    return None


def _is_async(fn) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


async def _read_body(receive) -> bytes | None:
    """The whole body, or None if the client disconnected first."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive):
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def install(app, settings) -> None:
    """Add the layer for every `@hot` route, unless `NHR_HOT_GATE` is off. Call after the routes
    are included and before the admission middleware is added (it must sit inside it)."""
    routes = hot_routes(app)  # planned even when off: a route that cannot be hot fails at start either way
    if routes and settings.serve.hot_gate:
        app.add_middleware(HotGateMiddleware, routes=routes)
