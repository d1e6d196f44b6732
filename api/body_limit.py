"""Request bodies over a size limit answer 413 before anything parses them (issue 18).

A pure ASGI middleware, outside routing, validation and the unit of work:
- a `Content-Length` over the limit is answered at once, without reading a byte of the body;
- otherwise the bytes are counted as they arrive (a chunked body has no length to trust). The
  body is read up to the limit and replayed to the app; one byte more and the request is
  answered 413 and the app never runs. Nothing was parsed, audited or written.
The limit is `NHR_MAX_BODY_BYTES`; the batch sync and the FHIR Bundle endpoint (POST /fhir/R4)
carry a day of work, so they get `NHR_MAX_BATCH_BODY_BYTES`. The answer is problem+json (an
OperationOutcome under /fhir/R4) and names the limit, never the body.
"""

from __future__ import annotations

import json

from registry.fhir import outcome

FHIR_PREFIX = "/fhir/R4"
BATCH_PATHS = frozenset({"/api/v1/sync/batch", FHIR_PREFIX, FHIR_PREFIX + "/"})
_BODYLESS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


class BodyLimitMiddleware:
    def __init__(self, app, *, max_bytes: int, max_batch_bytes: int) -> None:
        self.app, self.max_bytes, self.max_batch_bytes = app, max_bytes, max_batch_bytes

    def limit_for(self, path: str) -> int:
        return self.max_batch_bytes if path in BATCH_PATHS else self.max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in _BODYLESS:
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        length = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
                break
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = None
            if declared is not None and declared > limit:
                await _too_large(scope, send, limit)
                return
        # Count what actually arrives: a chunked body (or a lying length) is cut off at the limit.
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the app see it
                chunks.append(message)
                break
            size += len(message.get("body", b""))
            if size > limit:
                await _too_large(scope, send, limit)
                return
            chunks.append(message)
            if not message.get("more_body", False):
                break
        body = b"".join(m.get("body", b"") for m in chunks if m["type"] == "http.request")
        replay = [{"type": "http.request", "body": body, "more_body": False}] if chunks[-1]["type"] == "http.request" \
            else chunks[-1:]

        async def replayed():
            return replay.pop(0) if replay else await receive()

        await self.app(scope, replayed, send)


async def _too_large(scope, send, limit: int) -> None:
    detail = f"the request body is larger than {limit} bytes"
    if scope["path"] == FHIR_PREFIX or scope["path"].startswith(FHIR_PREFIX + "/"):
        body, media = outcome.operation_outcome(413, detail, code="too-long"), b"application/fhir+json"
    else:
        body = {"type": "urn:nhr:problem:payload-too-large", "title": "Payload too large", "status": 413, "detail": detail,
                "errors": [{"field": "body", "pointer": "#", "in": "body", "detail": f"at most {limit} bytes"}]}
        rid = (scope.get("state") or {}).get("request_id")
        if rid:
            body["request_id"] = rid
        media = b"application/problem+json"
    raw = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": 413, "headers": [
        (b"content-type", media), (b"content-length", str(len(raw)).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": raw})
