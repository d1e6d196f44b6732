"""Content negotiation on /fhir/R4 (FHIR R4 http.html, "Content Types and encodings"): JSON only.

- Response: `_format` in the URL overrides `Accept`. `_format` must be json, application/json or
  application/fhir+json; `Accept` must admit application/fhir+json or application/json (through
  `*/*` or `application/*` too; q-values honoured, q=0 excludes; a `fhirVersion` parameter must
  be 4.0). Otherwise 406. The answer is application/fhir+json unless the client prefers plain
  application/json (same body). No `Accept` at all means fhir+json.
- Request body: a resource or Bundle must be application/fhir+json or application/json (UTF-8,
  FHIR 4.0 if a `fhirVersion` is given); a POST `_search` body must be
  application/x-www-form-urlencoded. Otherwise 415. A body sent without any Content-Type is
  read as JSON (FastAPI's rule, kept for simple clients).
- Refusals are `FhirInvalid` errors (registry/fhir/params.py), so they are OperationOutcomes
  naming `_format`, `Accept` or `Content-Type`, and, raised inside a route's gate
  (`api/fhir/routes.gate`), audited refusals like any other.
"""

from __future__ import annotations

from fastapi import Request

from registry.fhir.params import (FHIR_JSON, FHIR_VERSIONS, NotAcceptable, UnsupportedMediaType, check_format,
                                  media_params)

PLAIN_JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
SERVED = (FHIR_JSON, PLAIN_JSON)  # in the server's order of preference


def _ranges(accept: str) -> list[tuple[str, dict, float]]:
    out = []
    for part in accept.split(","):
        if not part.strip():
            continue
        kind, params = media_params(part)
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 0.0  # an unreadable weight admits nothing
        out.append((kind, params, q))
    return out


def _quality(candidate: str, ranges: list[tuple[str, dict, float]]) -> float:
    """The weight of the most specific range that matches `candidate` (RFC 9110 12.5.1)."""
    best, specificity = 0.0, -1
    major = candidate.split("/", 1)[0]
    for kind, params, q in ranges:
        if params.get("fhirversion", FHIR_VERSIONS[0]) not in FHIR_VERSIONS:
            continue
        level = 2 if kind == candidate else 1 if kind == f"{major}/*" else 0 if kind == "*/*" else -1
        if level > specificity:
            best, specificity = q, level
    return best if specificity >= 0 else 0.0


def response_type(request: Request) -> str:
    """The media type to answer with; raises `NotAcceptable`."""
    formats = request.query_params.getlist("_format")
    for value in formats:
        check_format(value)
    if formats:
        kind = media_params(formats[0])[0]
        return PLAIN_JSON if kind == PLAIN_JSON else FHIR_JSON
    accept = request.headers.get("accept", "").strip()
    if not accept:
        return FHIR_JSON
    ranges = _ranges(accept)
    weights = {c: _quality(c, ranges) for c in SERVED}
    chosen = max(SERVED, key=lambda c: weights[c])  # ties keep the server's order: fhir+json first
    if weights[chosen] <= 0:
        raise NotAcceptable("Accept", "only application/fhir+json and application/json (FHIR 4.0) are served")
    return chosen


def check_body(request: Request, body: str | None) -> None:
    """`body`: "resource" (FHIR JSON), "form" (POST _search) or None (no body expected)."""
    if body is None:
        return
    header = request.headers.get("content-type")
    if header is None:
        return
    kind, params = media_params(header)
    if body == "form":
        ok = kind == FORM
        wanted = FORM
    else:
        ok = (kind in SERVED and params.get("charset", "utf-8").lower() in ("utf-8", "utf8")
              and params.get("fhirversion", FHIR_VERSIONS[0]) in FHIR_VERSIONS)
        wanted = "application/fhir+json or application/json (UTF-8, FHIR 4.0)"
    if not ok:
        raise UnsupportedMediaType("Content-Type", f"the request body must be {wanted}")


def negotiate(request: Request, body: str | None = None) -> str:
    """Both checks; the response media type."""
    chosen = response_type(request)
    check_body(request, body)
    return chosen
