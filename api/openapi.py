"""The OpenAPI document tells the truth (issue 18), completed centrally from what each route declares.

FastAPI documents a route's success response and a generic 422. Every error answer of this API
comes from one place (api/problems.py, the gate in api/deps.py, api/body_limit.py), so the error
responses are derived here from facts about the route, not written by hand in each route:
- its declared access (`require(permission)` or `public`): 401, 403 and 404 (out of scope) for a
  gated route; 429 for a patient-data permission (registry/rate_limit.py) and for the logins;
- its parameters and body: 422 (with a body also 413); path parameters: 404;
- a gated POST: the `Idempotency-Key` header, 409 (its first request still running) and 422;
- an `If-Match` header: 412 (stale) and 428 (missing);
- every route but liveness and metrics reads the database: 503;
- a FHIR route that negotiates content: 406 (`_format`, `Accept`), with a body also 415.
Each error response is `application/problem+json` with the `Problem` schema and an example
(an OperationOutcome under /fhir/R4), with `Retry-After` on 429 and 503 and `WWW-Authenticate`
on 401. Success responses get the headers the routes set (`ETag`, `Location`), and the request
headers of the gate (`X-Purpose-Of-Use`, `X-Break-Glass-Reason`) are described. Every JSON body
gets an example (api/openapi_bodies.py).
tests/test_api_contract.py holds the app to this document with schemathesis.
"""

from __future__ import annotations

import copy
from http import HTTPStatus

from fastapi import FastAPI

from api import openapi_bodies, openapi_examples
from api.deps import declared_access, iter_api_routes
from registry.rate_limit import PATIENT_DATA
from security.access.permissions import ROLE_PURPOSES, Permission

PROBLEM_JSON = "application/problem+json"
FHIR_JSON = "application/fhir+json"
FHIR_PREFIX = "/fhir/R4"
LOGINS = {"/api/v1/auth/token", "/api/v1/citizen/token"}
NO_DATABASE = {"/healthz", "/metrics", "/readyz"}  # /readyz answers its own 503 (below)

TITLES = {406: "Not acceptable", 415: "Unsupported media type", 400: "Bad request", 401: "Authentication required", 403: "Not allowed", 404: "Not found", 409: "Conflict",
          412: "Precondition failed", 413: "Payload too large", 422: "Invalid input", 428: "Precondition required",
          429: "Too many attempts", 503: "Service unavailable"}
SLUGS = {406: "not-acceptable", 415: "unsupported-media-type", 400: "bad-request", 401: "unauthenticated", 403: "forbidden", 404: "not-found", 409: "conflict",
         412: "precondition-failed", 413: "payload-too-large", 422: "invalid-input", 428: "precondition-required",
         429: "too-many-attempts", 503: "unavailable"}
DETAILS = {406: "_format or Accept asks for a format this server does not serve (JSON only)",
           415: "the body must be application/fhir+json (a form for _search)", 401: "a bearer token is required", 403: "your role does not allow this", 404: "no such record in your scope",
           409: "a request with this Idempotency-Key is still being processed; retry later",
           412: "the record has changed since you read it (If-Match)", 413: "the request body is larger than 1048576 bytes",
           422: "invalid value for: given_name", 428: "If-Match is required", 429: "too many requests; slow down",
           503: "the database is unreachable; retry later", 400: "the request body is not a valid FHIR JSON resource"}

PROBLEM_SCHEMA = {
    "title": "Problem", "type": "object", "required": ["type", "title", "status"],
    "description": "RFC 9457 problem details. Never echoes a submitted value. Extension members (e.g. a refused "
                   "dose's rule `reason`) may be added.",
    "properties": {
        "type": {"type": "string", "description": "urn:nhr:problem:<slug>"},
        "title": {"type": "string"}, "status": {"type": "integer"}, "detail": {"type": "string"},
        "instance": {"type": "string", "description": "the route template, never the concrete path"},
        "request_id": {"type": "string"},
        "errors": {"type": "array", "items": {"$ref": "#/components/schemas/ProblemFieldError"}},
    },
    "additionalProperties": True,
}
FIELD_ERROR_SCHEMA = {
    "title": "ProblemFieldError", "type": "object", "required": ["field", "in"],
    "properties": {"field": {"type": "string", "description": "dotted field name, `body` for the body as a whole, or a "
                                                               "header or parameter name"},
                   "pointer": {"type": "string", "description": "JSON pointer into the body"},
                   "in": {"type": "string", "description": "body, query, path or header"},
                   "detail": {"type": "string", "description": "the rule the value broke (never the value)"}},
    "additionalProperties": True,
}
OUTCOME_SCHEMA = {
    "title": "OperationOutcome", "type": "object", "required": ["resourceType", "issue"],
    "properties": {"resourceType": {"const": "OperationOutcome"},
                   "issue": {"type": "array", "items": {"type": "object", "required": ["severity", "code"], "properties": {
                       "severity": {"type": "string"}, "code": {"type": "string"}, "diagnostics": {"type": "string"},
                       "expression": {"type": "array", "items": {"type": "string"}}}}}},
    "additionalProperties": True,
}
_PURPOSES = sorted({p for codes in ROLE_PURPOSES.values() for p in codes})
HEADER_DOCS = {
    "X-Purpose-Of-Use": f"HL7 v3 PurposeOfUse code for this access ({', '.join(_PURPOSES)}). Each role may state only "
                        "its own purposes (README, Roles and scopes); the default is the role's first. Another code "
                        "answers 422.",
    "X-Break-Glass-Reason": "Emergency access outside capture scope (clinic workers and officials, reads only): the "
                            "reason, 10 to 500 characters. Forces purpose ETREAT; the audit event is flagged for review.",
    "If-Match": "The ETag of the version you read. Required: missing answers 428, stale answers 412.",
}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "description": "Makes a retry safe: the first answer is stored and replayed for the same key and body; the same "
                   "key with another body answers 422, and while the first request runs, 409. 1 to 255 printable "
                   "ASCII characters.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
}
_SUCCESS_HEADERS = {
    "ETag": {"description": "the record's version, for If-Match", "schema": {"type": "string"}},
    "Location": {"description": "where the created record can be read", "schema": {"type": "string"}},
}
# Success headers the routes set (one table here rather than a note in each route).
RESPONSE_HEADERS = {
    ("POST", "/api/v1/patients"): ("ETag", "Location"),
    ("GET", "/api/v1/patients/{patient_id}"): ("ETag",),
    ("PATCH", "/api/v1/patients/{patient_id}"): ("ETag",),
    ("POST", "/api/v1/patients/{patient_id}/immunizations"): ("ETag",),
    ("POST", "/api/v1/immunizations/{dose_id}/correct"): ("ETag",),
    ("POST", "/fhir/R4/Patient"): ("ETag", "Location"),
    ("POST", "/fhir/R4/Immunization"): ("ETag", "Location"),
    ("GET", "/fhir/R4/Patient/{patient_id}"): ("ETag",),
    ("GET", "/fhir/R4/Immunization/{dose_id}"): ("ETag",),
}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}
_AUTHENTICATE = {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}}


def install(app: FastAPI) -> None:
    """Replace `app.openapi` with one that completes FastAPI's document once."""
    original = app.openapi

    def openapi() -> dict:
        if not getattr(app.state, "openapi_completed", False):
            complete(original(), app.routes)
            app.state.openapi_completed = True
        return app.openapi_schema

    app.openapi = openapi


def statuses_of(method: str, path: str, access: str | None, op: dict, negotiated: bool = False) -> set[int]:
    params = op.get("parameters", [])
    gated = access not in (None, "public")
    out: set[int] = set()
    if path not in NO_DATABASE:
        out.add(503)
    if gated:
        out |= {401, 403, 404, 422}
        if Permission(access) in PATIENT_DATA:
            out.add(429)
        if method == "POST":
            out |= {409, 422}
    if path in LOGINS:
        out |= {401, 429}
    if "{" in path:
        out.add(404)
    if params:
        out.add(422)
    if "requestBody" in op:
        out |= {413, 422}
    if any(p["in"] == "header" and p["name"] == "If-Match" for p in params):
        out |= {412, 428}
    if path.startswith(FHIR_PREFIX) and (params or "requestBody" in op):
        out.add(400)
    if negotiated:  # api/fhir/negotiation.py: an unsupported _format or Accept; an unsupported body media type
        out |= {406, 415} if "requestBody" in op else {406}
    return out


def negotiates(route, path: str) -> bool:
    """Whether the route runs FHIR content negotiation: through its gate (api/fhir/routes.gate), or
    the CapabilityStatement, which negotiates itself."""
    if path == f"{FHIR_PREFIX}/metadata":
        return True
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        if getattr(dep.call, "__name__", "") == "fhir_gate":
            return True
        stack.extend(dep.dependencies)
    return False


def _example(status: int, fhir: bool) -> dict:
    if fhir:
        return {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "processing",
                                                               "diagnostics": DETAILS[status]}]}
    body = {"type": f"urn:nhr:problem:{SLUGS[status]}", "title": TITLES[status], "status": status,
            "detail": DETAILS[status], "instance": "/api/v1/patients/{patient_id}", "request_id": "3f2b9c0d8e7a41f6"}
    if status in (413, 422):
        field = "body" if status == 413 else "given_name"
        body["errors"] = [{"field": field, "pointer": "#" if status == 413 else "#/given_name", "in": "body",
                           "detail": "at most 1048576 bytes" if status == 413 else "must not contain control characters"}]
    return body


def _error_response(status: int, fhir: bool) -> dict:
    if fhir:
        schema = {"$ref": "#/components/schemas/OperationOutcome"}
        content = {media: {"schema": schema, "example": _example(status, True)} for media in (FHIR_JSON, "application/json")}
    else:
        content = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}, "example": _example(status, False)}}
    response = {"description": TITLES[status], "content": content}
    if status in (429, 503):
        response["headers"] = copy.deepcopy(_RETRY_AFTER)
    elif status == 401:
        response["headers"] = copy.deepcopy(_AUTHENTICATE)
    return response


def complete(spec: dict, routes) -> None:
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(Problem=PROBLEM_SCHEMA, ProblemFieldError=FIELD_ERROR_SCHEMA, OperationOutcome=OUTCOME_SCHEMA)
    for name, example in openapi_examples.by_component().items():
        if name in schemas and not schemas[name].get("examples"):
            schemas[name]["examples"] = [example]
    paths = spec.get("paths", {})
    if "/metrics" in paths:  # Prometheus text, not JSON
        paths["/metrics"]["get"]["responses"]["200"]["content"] = {"text/plain": {"schema": {"type": "string"},
                                                                                  "example": "nhr_http_requests_total 1.0\n"}}
    if "/readyz" in paths:  # not ready: the same body as ready, with 503
        ready = paths["/readyz"]["get"]["responses"]
        ready["503"] = {**copy.deepcopy(ready["200"]), "description": "The database or the keys are not reachable"}
    for served in iter_api_routes(routes):
        access = declared_access(served)
        for method in served.methods - {"HEAD"}:
            op = spec.get("paths", {}).get(served.path, {}).get(method.lower())
            if op is None:
                continue
            _complete_operation(method, served.path, access, op, negotiates(served.route, served.path))
    _problem_examples(spec)
    openapi_bodies.complete(spec)  # an example for every JSON body left without one
    if "HTTPValidationError" in schemas and "HTTPValidationError" not in repr(spec.get("paths")):
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)


def _problem_examples(spec: dict) -> None:
    """A problem answer a route documents itself (its own `responses=`) gets the standard example too."""
    for operations in spec.get("paths", {}).values():
        for op in operations.values():
            for status, response in op.get("responses", {}).items():
                media = response.get("content", {}).get(PROBLEM_JSON)
                if media is None or "example" in media or media.get("examples") or not status.isdigit():
                    continue
                code = int(status)
                media["example"] = _example(code, False) if code in TITLES else {
                    "type": "urn:nhr:problem:conflict" if code == 409 else "about:blank",
                    "title": HTTPStatus(code).phrase, "status": code, "instance": "/api/v1/...",
                    "request_id": "3f2b9c0d8e7a41f6"}


def _complete_operation(method: str, path: str, access: str | None, op: dict, negotiated: bool) -> None:
    fhir = path.startswith(FHIR_PREFIX)
    params = op.setdefault("parameters", [])
    for p in params:
        if p["in"] == "header" and p["name"] in HEADER_DOCS:
            p["description"] = HEADER_DOCS[p["name"]]
    if method == "POST" and access not in (None, "public") and not any(p["name"] == "Idempotency-Key" for p in params):
        params.append(copy.deepcopy(IDEMPOTENCY_KEY))
    if not params:
        op.pop("parameters")
    responses = op.setdefault("responses", {})
    if fhir:  # FHIR answers fhir+json unless the client asks for plain JSON (api/fhir/responses.media_type)
        for code, response in responses.items():
            content = response.get("content", {})
            if code.startswith("2") and "application/json" in content and FHIR_JSON not in content:
                content[FHIR_JSON] = copy.deepcopy(content["application/json"])
    for status in sorted(statuses_of(method, path, access, op, negotiated)):
        responses[str(status)] = _error_response(status, fhir)
    for name in RESPONSE_HEADERS.get((method, path), ()):
        for code, response in responses.items():
            if code.startswith("2"):
                response.setdefault("headers", {})[name] = copy.deepcopy(_SUCCESS_HEADERS[name])
