"""Request id, metrics and the access log, as a pure ASGI middleware (Starlette's
BaseHTTPMiddleware costs a task and a stream copy per request on the hottest paths).

The access log and the metrics use the route *template* (`/api/v1/patients/{patient_id}`),
never the concrete path or query string, so no identifier reaches a log line or a label.
"""

from __future__ import annotations

import json
import logging
import time
import traceback

from prometheus_client import Counter, Histogram

from api import security_headers
from api.deps import new_request_id

log = logging.getLogger("nhr.access")
REQUESTS = Counter("nhr_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram("nhr_http_request_seconds", "HTTP request latency", ["method", "route"])


_SERIES: dict[tuple, tuple] = {}


def _series(method: str, template: str, status: int) -> tuple:
    """The labelled children of the two metrics, looked up once per (method, route template, status):
    `labels()` takes a lock and builds its key on every call. Bounded: templates are the app's routes."""
    key = (method, template, status)
    found = _SERIES.get(key)
    if found is None:
        found = _SERIES[key] = (REQUESTS.labels(method, template, status), LATENCY.labels(method, template))
    return found


class RequestContextMiddleware:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        rid = new_request_id(incoming)
        scope.setdefault("state", {})["request_id"] = rid
        start = time.perf_counter()
        status = 500

        started = False

        async def send_with_headers(message):  # one wrapper a message (it was two: tracking, then headers)
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                headers = security_headers.add(list(message.get("headers", [])))
                headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:  # noqa: BLE001 - the last line of defence for invariant 8
            # Never re-raise: the server would log the traceback and the message, and a message
            # (a database error's parameters, a validation error's input) may carry patient data.
            tb = traceback.extract_tb(exc.__traceback__)
            where = f"{tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else "?"
            logging.getLogger("nhr.api").error("unhandled %s at %s rid=%s", type(exc).__name__, where, rid)
            if not started:
                body = json.dumps({"type": "urn:nhr:problem:internal-error", "title": "Internal error", "status": 500,
                                   "detail": "the request failed; nothing was changed", "request_id": rid}).encode()
                await send_with_headers({"type": "http.response.start", "status": 500, "headers": [
                    (b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            elapsed = time.perf_counter() - start
            counter, histogram = _series(scope["method"], template, status)
            counter.inc()
            histogram.observe(elapsed)
            if log.isEnabledFor(logging.INFO):
                log.info("%s %s %s %.1fms rid=%s", scope["method"], template, status, elapsed * 1000, rid)
