"""Admission to the sync connection pool, on the event loop (the upload-burst stall, issue 17/18).

Why: a request checks out its sync database connection in a worker thread (the unit of work's
session, the Idempotency-Key claim's pinned connection) and keeps it across several hand-offs to
the thread pool (claim, route, commit, refusal). With more requests in flight than the pool has
connections, the threads of the requests still waiting for a connection block in QueuePool's
checkout, and once they fill AnyIO's thread pool the requests that HOLD the connections cannot
get a thread to continue: nothing moves until the pool's 30 s timeout answers 503 (measured: 100
devices uploading at once on one worker, 14 doses/s and 132 answers of 503).

The fix: at most as many requests per process as the sync pool has connections (pool_size +
max_overflow) may be past this middleware. The others wait here, on the event loop (a semaphore:
no thread, no connection), so a thread never blocks in checkout for a request's connection and
the holders always find a thread. A request waiting longer than `NHR_DB_ADMISSION_TIMEOUT_SECONDS`
is answered 503 `overloaded` with Retry-After (problem+json; an OperationOutcome under /fhir/R4),
never 500.

Where: inside BodyLimitMiddleware (the body has already arrived, so a slow client's upload does
not hold a place) and outside IdempotencyMiddleware, so the place is given back only after the
request's pinned connection and session were closed. It covers every route alike (API, FHIR,
console pages, public routes): any of them may check out a sync connection in a thread. Exempt:
`/healthz` and the console's static assets, which never touch the database.

Limits: a place is held for the whole request, including the async hot paths (audited read,
search), which use the async pool and only touch the sync pool for a refusal; they are therefore
also bounded to the sync pool's capacity per worker. A request refused here was never read nor
authenticated: nothing was done and there is no principal to audit (as for BodyLimitMiddleware's
413); it is logged (the method only: a path may hold an identifier) and counted in
`nhr_admission_refused_total`. Checkouts outside requests (the
in-process sealer, key reloads) are not counted: they hold a connection briefly, from one thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref

from prometheus_client import Counter
from sqlalchemy.pool import QueuePool

from api.body_limit import FHIR_PREFIX
from registry.fhir import outcome

log = logging.getLogger("nhr.api")
REFUSED = Counter("nhr_admission_refused_total", "Requests answered 503 after waiting for a database connection slot")
RETRY_AFTER_SECONDS = 2
_EXEMPT = ("/healthz",)
_EXEMPT_PREFIXES = ("/console/static/",)
DETAIL = "the server is busy: too many requests are waiting for a database connection; nothing was changed; retry later"


def pool_capacity(engine) -> int | None:
    """Connections the engine's pool can lend at once (pool_size + max_overflow), or None when it
    does not queue (NullPool, StaticPool, an unlimited overflow): then there is nothing to admit."""
    pool = engine.pool
    if not isinstance(pool, QueuePool):
        return None
    overflow = pool._max_overflow  # no public accessor; a negative value means "unlimited"
    return None if overflow < 0 else pool.size() + overflow


class AdmissionMiddleware:
    """See the module docstring. One semaphore per event loop (a worker process has one; tests run
    several apps, each on its own loop), sized from the runtime's engine on first use."""

    def __init__(self, app) -> None:
        self.app = app
        self._gates: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def _gate(self, scope) -> asyncio.Semaphore | None:
        loop = asyncio.get_running_loop()
        if loop not in self._gates:
            rt = scope["app"].state.runtime
            capacity = pool_capacity(rt.engine)
            self._gates[loop] = asyncio.Semaphore(capacity) if capacity else None
        return self._gates[loop]

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] != "http" or path in _EXEMPT or path.startswith(_EXEMPT_PREFIXES):
            await self.app(scope, receive, send)
            return
        gate = self._gate(scope)
        if gate is None:
            await self.app(scope, receive, send)
            return
        timeout = None
        try:
            if gate.locked():  # a place is taken at once when one is free: no timer to arm (the hot reads)
                timeout = scope["app"].state.runtime.settings.serve.db_admission_timeout_seconds
                async with asyncio.timeout(timeout):
                    await gate.acquire()
            else:
                await gate.acquire()
        except TimeoutError:
            REFUSED.inc()
            log.warning("admission refused after %.1f s: %s request, no database connection slot", timeout, scope["method"])
            await _busy(scope, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            gate.release()


async def _busy(scope, send) -> None:
    path = scope.get("path", "")
    if path == FHIR_PREFIX or path.startswith(FHIR_PREFIX + "/"):
        body, media = outcome.operation_outcome(503, DETAIL, code="transient"), b"application/fhir+json"
    else:
        body = {"type": "urn:nhr:problem:overloaded", "title": "Server busy", "status": 503, "detail": DETAIL}
        rid = (scope.get("state") or {}).get("request_id")
        if rid:
            body["request_id"] = rid
        media = b"application/problem+json"
    raw = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", media), (b"content-length", str(len(raw)).encode()),
        (b"retry-after", str(RETRY_AFTER_SECONDS).encode())]})
    await send({"type": "http.response.body", "body": raw})
