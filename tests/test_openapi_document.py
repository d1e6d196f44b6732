"""The OpenAPI document states every error answer, header and problem schema (issue 18, api/openapi.py).

Walks every served route with its declared access, so a new route is covered without being listed."""

from __future__ import annotations

import pytest

from api.deps import declared_access, iter_api_routes
from registry.rate_limit import PATIENT_DATA
from security.access.permissions import Permission

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def spec(app) -> dict:
    return app.openapi()


def _operations(app, spec):
    for served in iter_api_routes(app.routes):
        for method in served.methods - {"HEAD"}:
            op = spec["paths"].get(served.path, {}).get(method.lower())
            if op is not None:
                yield method, served.path, declared_access(served), op


def _error_media(path: str) -> str:
    return "application/fhir+json" if path.startswith("/fhir/R4") else PROBLEM


def test_every_gated_operation_documents_its_refusals(app, spec):
    seen = 0
    for method, path, access, op in _operations(app, spec):
        if access == "public":
            continue
        seen += 1
        responses = op["responses"]
        for status in ("401", "403", "404", "422", "503"):
            assert status in responses, f"{method} {path}: {status} undocumented"
            assert _error_media(path) in responses[status]["content"], f"{method} {path} {status}"
        assert "WWW-Authenticate" in responses["401"]["headers"]
        assert "Retry-After" in responses["503"]["headers"]
        if Permission(access) in PATIENT_DATA:
            assert "Retry-After" in responses["429"]["headers"], f"{method} {path}: the rate limit's 429"
        if "requestBody" in op:
            assert "413" in responses, f"{method} {path}: 413 undocumented"
        names = {p["name"]: p for p in op.get("parameters", []) if p["in"] == "header"}
        assert names["X-Purpose-Of-Use"]["description"] and names["X-Break-Glass-Reason"]["description"]
        if method == "POST":
            assert "Idempotency-Key" in names and {"409", "422"} <= set(responses), f"{method} {path}"
        if "If-Match" in names:
            assert {"412", "428"} <= set(responses), f"{method} {path}"
    assert seen > 40


def test_problem_responses_use_the_problem_schema_with_an_example(app, spec):
    assert {"type", "title", "status"} <= set(spec["components"]["schemas"]["Problem"]["required"])
    for method, path, _, op in _operations(app, spec):
        for status, response in op["responses"].items():
            media = response.get("content", {}).get(PROBLEM)
            if media is None:
                continue
            assert media["schema"] == {"$ref": "#/components/schemas/Problem"}, f"{method} {path} {status}"
            assert media["example"]["status"] == int(status)
    assert "HTTPValidationError" not in spec["components"]["schemas"]  # FastAPI's 422 shape is never answered


def test_success_headers_and_logins(spec):
    created = spec["paths"]["/api/v1/patients"]["post"]["responses"]["201"]["headers"]
    assert {"ETag", "Location"} <= set(created)
    assert "ETag" in spec["paths"]["/api/v1/patients/{patient_id}"]["get"]["responses"]["200"]["headers"]
    login = spec["paths"]["/api/v1/auth/token"]["post"]["responses"]
    assert {"401", "413", "422", "429"} <= set(login) and "Retry-After" in login["429"]["headers"]
    assert "text/plain" in spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]


def test_central_examples_land_on_their_components_and_validate(spec):
    from api.openapi_examples import EXAMPLES, by_component

    schemas = spec["components"]["schemas"]
    for model in EXAMPLES:
        name = type(model).__name__
        assert name in schemas, f"{name} is not a component of the document"
        [example] = schemas[name]["examples"]
        assert example == by_component()[name]
        type(model).model_validate(example)  # the JSON form reads back as the model


def test_fhir_operations_document_406_and_415_exactly_when_they_answer_them(app, spec, shared_world):
    """Asked for XML, every FHIR operation that documents 406 answers 406 and every other one does
    not; sent a body as text/plain, those documenting 415 answer 415 (api/fhir/negotiation.py)."""
    import uuid

    from api.openapi_bodies import by_operation

    w = shared_world
    checked = 0
    for method, path, _, op in _operations(app, spec):
        if not path.startswith("/fhir/R4") or "{resource_type}" in path:
            continue
        url = path.replace("{version_id}", "1").replace("{patient_id}", str(uuid.uuid4())) \
                  .replace("{dose_id}", str(uuid.uuid4())).replace("{job_id}", str(uuid.uuid4()))
        body = by_operation().get(f"{method} {path}", {}).get("request")
        kwargs = {"json": body} if isinstance(body, dict) and "form" not in str(op.get("requestBody")) else {}
        for who in ("clinic_a", "official_national"):  # a role that holds the operation's permission
            headers = w.h(who)
            xml = w.client.request(method, url, headers={**headers, "Accept": "application/xml"}, **kwargs)
            if xml.status_code != 403:
                break
        assert (xml.status_code == 406) is ("406" in op["responses"]), f"{method} {path}: {xml.status_code}"
        if "415" in op["responses"]:
            text = w.client.request(method, url, headers={**headers, "Content-Type": "text/plain"}, content=b"x=1")
            assert text.status_code == 415, f"{method} {path}: {text.status_code}"
        checked += 1
    assert checked >= 15
