"""The auditor's workbench, the audit proofs and the citizen view carry response examples in the
OpenAPI document (issue 3), and every example is valid against its response model, so examples
can neither disappear nor rot unnoticed."""

from __future__ import annotations

import base64
import csv
import io
import json

import pytest
from pydantic import BaseModel, TypeAdapter

from api.deps import iter_api_routes
from registry.audit_log import exports
from registry.audit_log.break_glass import FindingIn
from registry.audit_log.schemas import AuditEventView
from registry.citizens.schemas import CitizenLogin
from security.audit.checkpoint import load_public_key
from security.audit.merkle import verify_consistency, verify_inclusion

ACCESS_CODE = ("POST", "/api/v1/patients/{patient_id}/access-code")
# Every operation covered; a new audit or citizen route must be added here (and get an example).
OPERATIONS = [
    ("GET", "/api/v1/audit/anomalies"),
    ("GET", "/api/v1/audit/break-glass"),
    ("POST", "/api/v1/audit/break-glass/{event_id}/finding"),
    ("GET", "/api/v1/audit/checkpoints/latest"),
    ("GET", "/api/v1/audit/consistency"),
    ("GET", "/api/v1/audit/events"),
    ("GET", "/api/v1/audit/events/export"),
    ("GET", "/api/v1/audit/events/{event_id}/proof"),
    ("GET", "/api/v1/audit/public-key"),
    ("GET", "/api/v1/audit/verification"),
    ("GET", "/api/v1/citizen/me"),
    ("GET", "/api/v1/citizen/me/access-log"),
    ("GET", "/api/v1/citizen/me/certificate"),
    ("GET", "/api/v1/citizen/me/immunizations"),
    ("POST", "/api/v1/citizen/token"),
    ACCESS_CODE,
]


@pytest.fixture(scope="module")
def spec(app) -> dict:
    return app.openapi()


@pytest.fixture(scope="module")
def routes(app) -> dict:
    return {(m, r.path): r.route for r in iter_api_routes(app.routes) for m in r.methods}


def _component(spec: dict, schema: dict) -> dict | None:
    ref = schema.get("$ref")
    if not ref:
        return None
    assert ref.startswith("#/components/schemas/"), ref
    return spec["components"]["schemas"][ref.rsplit("/", 1)[1]]


def _direct(media: dict) -> list:
    """Examples written on the media type object itself."""
    out = [media["example"]] if "example" in media else []
    return out + [e["value"] for e in media.get("examples", {}).values() if "value" in e]


def _success(spec: dict, method: str, path: str) -> dict:
    responses = spec["paths"][path][method.lower()]["responses"]
    codes = [c for c in ("200", "201") if c in responses]
    assert codes, f"{method} {path}: no 200/201 response documented"
    return responses[codes[0]]


def _nullable(schema: dict) -> bool:
    return schema.get("type") == "null" or any(b.get("type") == "null" for b in schema.get("anyOf", []))


def _with_nulls(spec: dict, example, schema: dict):
    """The example with its nulls back. FastAPI writes the document with `exclude_none`, which drops
    every null from the examples too; a nullable property absent from an example is read as null."""
    schema = _component(spec, schema) or schema
    if "anyOf" in schema:
        kinds = {dict: "object", list: "array"}
        for branch in schema["anyOf"]:
            branch = _component(spec, branch) or branch
            if branch.get("type") == kinds.get(type(example)):
                return _with_nulls(spec, example, branch)
        return example
    if isinstance(example, dict) and "properties" in schema:
        out = {k: _with_nulls(spec, v, schema["properties"].get(k, {})) for k, v in example.items()}
        out.update({k: None for k, sub in schema["properties"].items() if k not in out and _nullable(sub)})
        return out
    if isinstance(example, list) and "items" in schema:
        return [_with_nulls(spec, v, schema["items"]) for v in example]
    return example


def _same_shape(example, dumped, where: str) -> None:
    """The example names exactly the model's fields, at every level (no stale or missing field)."""
    if isinstance(example, dict) and isinstance(dumped, dict):
        assert set(example) == set(dumped), f"{where}: example keys {sorted(set(example) ^ set(dumped))} differ from the model"
        for k in example:
            _same_shape(example[k], dumped[k], f"{where}.{k}")
    elif isinstance(example, list) and isinstance(dumped, list):
        for i, (a, b) in enumerate(zip(example, dumped)):
            _same_shape(a, b, f"{where}[{i}]")


def _validate(model, example, where: str) -> None:
    adapter = TypeAdapter(model)
    value = adapter.validate_python(example)
    dumped = adapter.dump_python(value, mode="json")
    if not (isinstance(model, type) and issubclass(model, BaseModel) and model.model_config.get("extra") == "allow"):
        _same_shape(example, dumped, where)


def test_every_audit_and_citizen_operation_is_covered(spec):
    documented = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops
                  if p.startswith(("/api/v1/audit", "/api/v1/citizen"))} | {ACCESS_CODE}
    assert documented == set(OPERATIONS)


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_success_response_has_a_valid_example(spec, routes, method, path):
    content = _success(spec, method, path).get("content", {})
    assert content, f"{method} {path}: the success response has no content"
    model = routes[(method, path)].response_model
    found = 0
    for media_type, media in content.items():
        direct = _direct(media)
        component = _component(spec, media.get("schema", {}))
        via_component = component.get("examples", []) if component else []
        found += len(direct) + len(via_component)
        if media_type != "application/json":
            continue
        assert model is not None, f"{method} {path}: a JSON response without a response model"
        for i, example in enumerate(direct + via_component):
            _validate(model, _with_nulls(spec, example, media["schema"]), f"{method} {path} example {i}")
    assert found, f"{method} {path}: no example in any media type of the success response"


def test_export_examples_match_each_format(spec):
    content = _success(spec, "GET", "/api/v1/audit/events/export")["content"]
    assert set(content) == {"application/x-ndjson", "text/csv", "application/fhir+ndjson"}
    ndjson = content["application/x-ndjson"]["example"]
    lines = ndjson.splitlines()
    assert lines
    for line in lines:
        _validate(AuditEventView, json.loads(line), "ndjson line")
    rows = list(csv.reader(io.StringIO(content["text/csv"]["example"])))
    assert rows[0] == exports.COLUMNS and len(rows) > 1
    assert all(len(r) == len(exports.COLUMNS) for r in rows[1:])
    fhir = [json.loads(line) for line in content["application/fhir+ndjson"]["example"].splitlines()]
    assert fhir and all(r["resourceType"] == "AuditEvent" and r["id"] and r["agent"] for r in fhir)


@pytest.mark.parametrize(("path", "model"), [("/api/v1/audit/break-glass/{event_id}/finding", FindingIn),
                                             ("/api/v1/citizen/token", CitizenLogin)])
def test_request_bodies_have_valid_examples(spec, path, model):
    content = spec["paths"][path]["post"]["requestBody"]["content"]
    found = 0
    for media in content.values():
        component = _component(spec, media.get("schema", {})) or media.get("schema", {})
        examples = _direct(media) + list(component.get("examples", []))
        found += len(examples)
        for example in examples:
            _validate(model, _with_nulls(spec, example, media.get("schema", {})), f"POST {path} request example")
    assert found


def test_proof_examples_verify(spec):
    """The checkpoint, proof and key examples are real: signatures and Merkle proofs check out."""
    def example(path: str) -> dict:
        media = _success(spec, "GET", path)["content"]["application/json"]
        return (_direct(media) or _component(spec, media["schema"])["examples"])[0]

    key = example("/api/v1/audit/public-key")
    public_key = load_public_key(key["public_key_pem"])

    def check(cp: dict) -> bytes:
        assert cp["origin"] == key["origin"] and cp["key_id"] == key["key_id"]
        root = base64.b64decode(cp["root_hash"])
        assert cp["note_body"] == f"{cp['origin']}\n{cp['tree_size']}\n{cp['root_hash']}\ntime {cp['signed_at']}\n"
        public_key.verify(base64.b64decode(cp["signature"]), cp["note_body"].encode())
        return root

    check(example("/api/v1/audit/checkpoints/latest"))
    inc = example("/api/v1/audit/events/{event_id}/proof")
    verify_inclusion(inc["leaf_index"], inc["tree_size"], bytes.fromhex(inc["leaf_hash"]),
                     [bytes.fromhex(h) for h in inc["audit_path"]], check(inc["checkpoint"]))
    con = example("/api/v1/audit/consistency")
    verify_consistency(con["first"], con["second"], check(con["first_checkpoint"]), check(con["second_checkpoint"]),
                       [bytes.fromhex(h) for h in con["proof"]])
