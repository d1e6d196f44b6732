"""An example for every request and response body of the OpenAPI document, each valid against the
schema it illustrates (issue 18; api/openapi_bodies.py).

Walks the generated document, so a new operation or status is covered without being listed: every
JSON body (`application/json`, `application/fhir+json`, `application/problem+json`), request or
response, must show at least one example, and every example must validate (jsonschema, JSON
Schema 2020-12 as OpenAPI 3.1 uses, formats checked) against its own media type's schema. A FHIR
resource example must also parse as its FHIR R4 resource (fhir.resources, as the API's own input
check). The examples file may not name an operation or status the document does not have."""

from __future__ import annotations

import json

import jsonschema
import pytest

from api import openapi_bodies
from registry.fhir.mapping import validate as validate_fhir

METHODS = {"get", "put", "post", "patch", "delete"}


@pytest.fixture(scope="module")
def spec(app) -> dict:
    return app.openapi()


def _bodies(spec: dict):
    """(where, media type, media object) of every request and response body."""
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            if method not in METHODS:
                continue
            for media_type, media in op.get("requestBody", {}).get("content", {}).items():
                yield f"{method.upper()} {path} request", media_type, media
            for status, response in op["responses"].items():
                for media_type, media in response.get("content", {}).items():
                    yield f"{method.upper()} {path} {status}", media_type, media


def _validator(spec: dict, schema: dict) -> jsonschema.Draft202012Validator:
    # the components travel along so that "#/components/schemas/..." resolves against this root
    return jsonschema.Draft202012Validator({**schema, "components": spec["components"]},
                                           format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def _fhir_resources(example):
    if isinstance(example, dict):
        if isinstance(example.get("resourceType"), str):
            yield example
        else:
            for value in example.values():
                yield from _fhir_resources(value)
    elif isinstance(example, list):
        for value in example:
            yield from _fhir_resources(value)


def test_every_json_body_has_an_example_valid_against_its_schema(spec):
    missing, invalid, checked = [], [], 0
    for where, media_type, media in _bodies(spec):
        if not openapi_bodies.is_json(media_type):
            continue
        examples = openapi_bodies.examples_of(spec, media)
        if not examples:
            missing.append(f"{where} {media_type}")
        for example in examples:
            checked += 1
            errors = sorted(_validator(spec, media.get("schema", {})).iter_errors(example), key=lambda e: e.path)
            invalid += [f"{where} {media_type}: {e.json_path}: {e.message[:120]}" for e in errors[:3]]
    assert not missing, "bodies without an example:\n" + "\n".join(missing)
    assert not invalid, "examples that break their schema:\n" + "\n".join(invalid)
    assert checked > 600


def test_fhir_examples_are_fhir_resources(spec):
    seen = set()
    for where, media_type, media in _bodies(spec):
        if media_type not in ("application/json", "application/fhir+json") or "/fhir/R4" not in where:
            continue
        for example in openapi_bodies.examples_of(spec, media):
            for resource in _fhir_resources(example):
                validate_fhir(resource)  # raises naming the element
                seen.add(resource["resourceType"])
    assert {"Patient", "Immunization", "Bundle", "CapabilityStatement", "OperationOutcome", "Parameters",
            "ImmunizationRecommendation"} <= seen


def test_the_examples_file_names_only_documented_operations_and_statuses(spec):
    for key, examples in openapi_bodies.by_operation().items():
        method, path = key.split(" ", 1)
        op = spec["paths"].get(path, {}).get(method.lower())
        assert op is not None, f"{key}: no such operation"
        for status, example in examples.items():
            if status == "request":
                content = op["requestBody"]["content"]
            else:
                assert status in op["responses"], f"{key}: {status} is not documented"
                content = op["responses"][status]["content"]
            shown = [m.get("example") for m in content.values()]
            assert example in shown, f"{key} {status}: the file's example is shadowed or unused"


def test_examples_are_invented_and_point_at_no_test_host(spec):
    text = json.dumps(spec)
    assert "testserver" not in text and "127.0.0.1" not in text
    for key in ("Zarnigar", "Qizilbash", "Mehrunnisa"):  # the test suite's generated people
        assert key not in text


def test_responses_without_a_body_promise_none(spec):
    for (method, path), statuses in openapi_bodies.NO_BODY.items():
        for status, (_, headers) in statuses.items():
            response = spec["paths"][path][method.lower()]["responses"][status]
            assert "content" not in response and set(response.get("headers", {})) == set(headers), (method, path)


def test_responses_written_without_nulls_require_no_nullable_property(app, spec):
    """A route that leaves nulls out of its answer (`response_model_exclude_none`) must not document a
    nullable property as required: the answer would break its own schema (found: the pair view's doses
    and the search's unnamed matches)."""
    from api.deps import iter_api_routes

    offenders = []
    for served in iter_api_routes(app.routes):
        route = served.route
        if not getattr(route, "response_model_exclude_none", False):
            continue
        for method in served.methods - {"HEAD"}:
            response = spec["paths"][served.path][method.lower()]["responses"]
            ok = next(r for code, r in response.items() if code.startswith("2"))
            for media in ok.get("content", {}).values():
                offenders += _required_nullable(spec, media.get("schema", {}), f"{method} {served.path}", set())
    assert not offenders, offenders


def _required_nullable(spec: dict, schema: dict, where: str, seen: set) -> list[str]:
    ref = schema.get("$ref")
    if ref:
        if ref in seen:
            return []
        seen.add(ref)
        schema = openapi_bodies.component(spec, schema)
    out = []
    for name in schema.get("required", []):
        prop = schema.get("properties", {}).get(name, {})
        if prop.get("type") == "null" or any(b.get("type") == "null" for b in prop.get("anyOf", [])):
            out.append(f"{where}: {schema.get('title')}.{name}")
    for sub in [*schema.get("properties", {}).values(), *schema.get("anyOf", []), *([schema["items"]] if "items" in schema else [])]:
        out += _required_nullable(spec, sub, where, seen)
    return out
