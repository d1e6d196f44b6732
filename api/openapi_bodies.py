"""An example for every JSON request and response body of the OpenAPI document (issue 18).

Three sources, in this order, for each JSON media type (`application/json`, `*+json`; also a form
body, and a text one such as CSV or NDJSON given a string) that has no example yet:
- the component's own example (`api/openapi_examples.py` builds those from the models);
- `api/openapi_bodies.json`: examples per operation (`"METHOD /path"`) and status (`"request"` for
  the request body), for the bodies without a model of their own (FHIR resources, reports,
  reference data) or whose model is shared. They were taken from a real run of the app on the
  demo's invented reference data and trimmed (lists of objects cut to two), with invented people
  in the examples' style; `tests/test_openapi_bodies.py` validates every example against the
  schema it illustrates (and FHIR ones with fhir.resources), so an example that drifts from its
  route fails there;
- an array of a component that has an example: a list of that one example;
- last, an example built from the schema itself (`synthesize`: required properties, the first enum
  value or branch, typical values per format), so that a route added without one still shows its
  shape; `synthesized()` lists them, and a real example should replace each.
FastAPI writes the document without nulls (`exclude_none`), examples included, which leaves an
example without a required nullable property: such properties are put back as null (`restore_nulls`).
Responses that carry no body at all (a bulk export's kick-off and cancel, its "still running"
poll) say so here instead of promising JSON.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources

# (method, path) -> {status: (description, headers)} of responses without a body
NO_BODY = {
    ("GET", "/fhir/R4/$export"): {"202": ("Accepted: poll the status URL in Content-Location", ("Content-Location",))},
    ("GET", "/fhir/R4/Patient/$export"): {"202": ("Accepted: poll the status URL in Content-Location",
                                                  ("Content-Location",))},
    ("GET", "/fhir/R4/bulk-export/{job_id}"): {"202": ("Still running: poll again after Retry-After",
                                                       ("X-Progress", "Retry-After"))},
    ("DELETE", "/fhir/R4/bulk-export/{job_id}"): {"202": ("Cancelled; the snapshot and its files are deleted", ())},
}
_HEADERS = {
    "Content-Location": {"description": "the export's status URL", "schema": {"type": "string"}},
    "X-Progress": {"description": "how far the export has got", "schema": {"type": "string"}},
    "Retry-After": {"description": "seconds to wait before polling again", "schema": {"type": "integer"}},
}


@cache
def by_operation() -> dict[str, dict]:
    return json.loads(resources.files("api").joinpath("openapi_bodies.json").read_text(encoding="utf-8"))


def is_json(media_type: str) -> bool:
    return media_type == "application/json" or media_type.endswith("+json")


def _takes(media_type: str, example) -> bool:
    """A JSON value illustrates a JSON or form body; a string, a text one (CSV, NDJSON)."""
    if isinstance(example, str):
        return media_type.startswith("text/") or media_type.endswith("ndjson")
    return is_json(media_type) or media_type == "application/x-www-form-urlencoded"


def component(spec: dict, schema: dict | None) -> dict | None:
    ref = (schema or {}).get("$ref", "")
    return spec["components"]["schemas"].get(ref.rsplit("/", 1)[-1]) if ref.startswith("#/components/schemas/") else None


def examples_of(spec: dict, media: dict) -> list:
    """Every example a media type object shows: its own, or its component's."""
    own = [media["example"]] if "example" in media else []
    own += [e["value"] for e in media.get("examples", {}).values() if "value" in e]
    return own or list((component(spec, media.get("schema")) or {}).get("examples", []))


def _nullable(schema: dict) -> bool:
    return schema.get("type") == "null" or any(b.get("type") == "null" for b in schema.get("anyOf", []))


def restore_nulls(spec: dict, example, schema: dict | None) -> None:
    """Put back, in place, the required nullable properties FastAPI dropped from `example`."""
    schema = component(spec, schema) or schema or {}
    kinds = {dict: "object", list: "array"}
    for branch in schema.get("anyOf", []):
        branch = component(spec, branch) or branch
        if branch.get("type") == kinds.get(type(example)):
            restore_nulls(spec, example, branch)
            return
    if isinstance(example, dict) and "properties" in schema:
        properties = schema["properties"]
        for name in schema.get("required", []):
            if name not in example and _nullable(properties.get(name, {})):
                example[name] = None
        for name, value in example.items():
            restore_nulls(spec, value, properties.get(name))
    elif isinstance(example, list) and "items" in schema:
        for value in example:
            restore_nulls(spec, value, schema["items"])


def _from_items(spec: dict, schema: dict | None):
    if (schema or {}).get("type") == "array":
        found = (component(spec, schema.get("items")) or {}).get("examples")
        if found:
            return [found[0]]
    return None


_FORMATS = {"uuid": "0b9f1c4e-8d1a-4c1e-9a43-5f3b2a7c9e10", "date": "2026-10-13", "date-time": "2026-10-13T09:30:12Z",
            "uri": "https://nhr.example.pk/", "email": "registry@example.pk"}
_SYNTHESIZED: list[str] = []


def synthesize(spec: dict, schema: dict | None, depth: int = 0):
    """A value valid against `schema` (as far as the usual keywords go): a component's own example
    if it has one, required properties only, the first enum value, const or non-null branch."""
    schema = schema or {}
    found = component(spec, schema)
    if found is not None:
        return copy.deepcopy(found["examples"][0]) if found.get("examples") else synthesize(spec, found, depth + 1)
    if depth > 12:
        return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return next((v for v in schema["enum"] if v is not None), schema["enum"][0])
    if "example" in schema:
        return schema["example"]
    if schema.get("examples"):
        return schema["examples"][0]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            branches = [b for b in schema[key] if b.get("type") != "null"] or schema[key]
            return synthesize(spec, branches[0], depth + 1)
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {name: synthesize(spec, props.get(name), depth + 1) for name in schema.get("required", [])}
    if kind == "array":
        return [synthesize(spec, schema.get("items"), depth + 1)][:max(1, schema.get("minItems", 1))]
    if kind == "string":
        value = _FORMATS.get(schema.get("format"), "text")
        return value if len(value) >= schema.get("minLength", 0) else value * schema["minLength"]
    if kind == "integer":
        return max(schema.get("minimum", 1), 1) if "maximum" not in schema else schema.get("minimum", schema["maximum"])
    if kind == "number":
        return schema.get("minimum", 1.0)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return {}


def synthesized() -> list[str]:
    """The bodies whose example was built from their schema (the last document built)."""
    return list(_SYNTHESIZED)


def _fill(spec: dict, content: dict, given, where: str) -> None:
    for media_type, media in content.items():
        if examples_of(spec, media):
            continue
        example = given if given is not None else _from_items(spec, media.get("schema"))
        if example is None and is_json(media_type) and media_type != "application/problem+json":
            example = synthesize(spec, media.get("schema"))
            _SYNTHESIZED.append(f"{where} {media_type}")
        if example is not None and _takes(media_type, example):
            media["example"] = copy.deepcopy(example)


def _restore_all(spec: dict) -> None:
    for schema in spec.get("components", {}).get("schemas", {}).values():
        for example in schema.get("examples", []):
            restore_nulls(spec, example, schema)
    for operations in spec.get("paths", {}).values():
        for op in operations.values():
            contents = [op.get("requestBody", {}).get("content", {})]
            contents += [r.get("content", {}) for r in op.get("responses", {}).values()]
            for content in contents:
                for media in content.values():
                    own = [media["example"]] if "example" in media else []
                    for example in own + [e["value"] for e in media.get("examples", {}).values() if "value" in e]:
                        restore_nulls(spec, example, media.get("schema"))


def complete(spec: dict) -> None:
    _SYNTHESIZED.clear()
    _restore_all(spec)
    bodies = by_operation()
    for path, operations in spec.get("paths", {}).items():
        for method, op in operations.items():
            given = bodies.get(f"{method.upper()} {path}", {})
            for status, (description, headers) in NO_BODY.get((method.upper(), path), {}).items():
                op["responses"][status] = {"description": description,
                                           "headers": {h: copy.deepcopy(_HEADERS[h]) for h in headers}}
            where = f"{method.upper()} {path}"
            if "requestBody" in op:
                _fill(spec, op["requestBody"].get("content", {}), given.get("request"), f"{where} request")
            for status, response in op.get("responses", {}).items():
                _fill(spec, response.get("content", {}), given.get(status), f"{where} {status}")
