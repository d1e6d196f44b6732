"""The FastAPI application: routes, problem+json, request context, and the route check."""

from __future__ import annotations

import inspect
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import hot_gate, idempotency, openapi, problems
from api.admission import AdmissionMiddleware
from api.body_limit import BodyLimitMiddleware
from api import console, idempotency, problems
from api.deps import check_routes
from api.nodes import transport as node_transport
from api.fhir import responses as fhir_responses
from api.fhir import match as fhir_match_routes
from api.fhir import routes as fhir_routes
from api.middleware import RequestContextMiddleware
from api.routes import audit, audit_proofs, audit_workbench, auth, citizen, health, immunizations, patients, reference
from api.routes import bulk_export as bulk_export_routes
from api.routes import certificates as certificate_routes
from api.routes import reports as report_routes
from api.routes import transparency as transparency_routes
from api.routes import field_reports as field_report_routes
from api.routes import schedules as schedule_routes
from api.routes import accounts as account_routes
from api.routes import aefi as aefi_routes
from api.routes import docs as docs_routes
from api.routes import due_lists as due_list_routes
from api.routes import linkage as linkage_routes
from api.routes import sync as sync_routes
from registry.audit_log import sealing
from registry.reports import background as report_refresher
from registry.runtime import Runtime
from registry.settings import Settings, get_settings

# FastAPI >= 0.160 ships native OpenTelemetry that records validation failures *with the submitted
# values* and exception messages, exported whenever an OTel provider or FASTAPI_OTEL_AUTO_CONFIGURE
# is configured in the environment. That would carry patient data out (invariant 8): it is off.
_NO_TELEMETRY = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False,
                 "auto_configure": False, "exclude": lambda scope: True}
_TELEMETRY_KW = {"telemetry": _NO_TELEMETRY} if "telemetry" in inspect.signature(FastAPI.__init__).parameters else {}


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if getattr(app.state, "runtime", None) is None:
            app.state.runtime = Runtime.build(settings)
        app.state.runtime.warm()
        node_transport.install(app.state.runtime.federation, app.state.runtime.settings)  # provincial nodes' peers
        await app.state.runtime.open_async()
        # Off in production by default: `nhr worker` runs them (registry/worker.py)
        in_process = app.state.runtime.settings.runs_worker_in_process
        sealer = sealing.start_background(app.state.runtime) if in_process else None
        refresher = report_refresher.start_background(app.state.runtime) if in_process else None
        yield
        await report_refresher.stop_background(refresher)
        await sealing.stop_background(sealer)
        await app.state.runtime.close_async()

    app = FastAPI(
        title="NHR — National Health Registry", version="0.1.0", lifespan=lifespan, **_TELEMETRY_KW,
        docs_url=None, redoc_url=None,  # the app serves its own offline /docs (api/routes/docs.py)
        description="Patient and vaccination registry with field encryption, jurisdiction-scoped access and an audit "
                    "event for every access. Errors are RFC 9457 `application/problem+json`.",
    )
    app.state.runtime = runtime
    problems.install(app)
    for module in (health, auth, patients, immunizations, audit, audit_workbench, audit_proofs, reference, citizen):
        app.include_router(module.router)
    app.include_router(bulk_export_routes.router)  # before the FHIR routes: Patient/$export is not Patient/{id}
    app.include_router(certificate_routes.router)
    app.include_router(schedule_routes.router)
    app.include_router(due_list_routes.router)
    app.include_router(aefi_routes.router)
    app.include_router(account_routes.router)
    app.include_router(report_routes.router)
    app.include_router(field_report_routes.router)
    app.include_router(sync_routes.router)
    app.include_router(linkage_routes.router)
    app.include_router(fhir_match_routes.router)  # Patient/$match (issue 13)
    app.include_router(fhir_routes.router)
    app.include_router(docs_routes.router)
    app.include_router(transparency_routes.router)  # issue 16: public checkpoints and witness cosignatures
    console.install(app)  # the web console (api/console/): pages, their assets, errors as pages
    fhir_responses.install(app)  # after every exception handler: OperationOutcome under /fhir/R4
    check_routes(app.routes)
    openapi.install(app)  # every error status, header and problem schema, derived from the routes' declarations

    idempotency.install(app)  # Idempotency-Key on every POST behind `require` (issue 5)
    hot_gate.install(app, settings)  # the `@hot` routes without dependency resolution (api/hot_gate.py), inside admission
    app.add_middleware(AdmissionMiddleware)  # at most the sync pool's capacity in flight (api/admission.py)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.limits.max_body_bytes,
                       max_batch_bytes=settings.limits.max_batch_body_bytes)  # 413 before anything parses
    app.add_middleware(RequestContextMiddleware)
    return app
