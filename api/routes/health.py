"""Liveness, readiness and metrics. Public; they expose no patient data."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from api.deps import Public
from api.routing import GatedRoute
from registry.database import RETRY_AFTER_SECONDS

router = APIRouter(route_class=GatedRoute, tags=["operations"], dependencies=[Public])


@router.get("/healthz", summary="The process is alive")
def healthz():
    return {"status": "ok"}


@router.get("/readyz", summary="The database and the keys are reachable")
def readyz(request: Request, response: Response):
    rt = request.app.state.runtime
    checks = {}
    try:
        with rt.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception:
        checks["database"] = "unreachable"
    checks["keys"] = "ok" if rt.keyring.readable() and rt.keys.custodians() else "unavailable"
    ready = all(v == "ok" for v in checks.values())
    response.status_code = 200 if ready else 503
    if not ready:
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return {"status": "ready" if ready else "not ready", "checks": checks}


@router.get("/metrics", summary="Prometheus metrics (request counts and latency by route template)")
def metrics():
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
