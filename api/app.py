"""The FastAPI application: routes, problem+json, request ids, metrics, and the route check.

No request is logged with its body, query string or headers: the access log records method,
route *template* (never the concrete path with ids), status, duration and request id.
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from prometheus_client import Counter, Histogram

from api import problems
from api.deps import check_routes, new_request_id
from api.routes import audit, auth, health, immunizations, patients, reference
from registry.runtime import Runtime
from registry.settings import Settings, get_settings

log = logging.getLogger("nhr.access")
REQUESTS = Counter("nhr_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram("nhr_http_request_seconds", "HTTP request latency", ["method", "route"])


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if getattr(app.state, "runtime", None) is None:
            app.state.runtime = Runtime.build(settings)
        app.state.runtime.load_keys()
        yield

    app = FastAPI(
        title="NHR — National Health Registry", version="0.1.0", lifespan=lifespan,
        description="Patient and vaccination registry with field encryption, jurisdiction-scoped access and an audit "
                    "event for every access. Errors are RFC 9457 `application/problem+json`.",
    )
    app.state.runtime = runtime
    problems.install(app)
    for module in (health, auth, patients, immunizations, audit, reference):
        app.include_router(module.router)
    check_routes(app.routes)

    @app.middleware("http")
    async def request_context(request: Request, call_next):
        request.state.request_id = new_request_id(request.headers.get("x-request-id"))
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        elapsed = time.perf_counter() - start
        REQUESTS.labels(request.method, template, response.status_code).inc()
        LATENCY.labels(request.method, template).observe(elapsed)
        response.headers["X-Request-ID"] = request.state.request_id
        response.headers["Cache-Control"] = "no-store"
        log.info("%s %s %s %.1fms rid=%s", request.method, template, response.status_code, elapsed * 1000, request.state.request_id)
        return response

    return app
