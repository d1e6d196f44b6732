"""Input hardening (issue 18): bodies over the limit answer 413 before they are parsed (also
chunked), names and free text refuse control characters, lone surrogates and bidirectional
overrides with a 422 naming the field, and a body that is not UTF-8 is invalid JSON like any other."""

from __future__ import annotations

import json
import uuid

import pytest
from pydantic import BaseModel, ValidationError

from api.deps import UNSAFE_REASON
from conftest import audit_events, new_child
from registry.aefi.schemas import AdverseEventCreate
from registry.audit_log.break_glass import FindingIn
from registry.immunizations.schemas import DoseCorrection, DoseCreate, DoseVoid
from registry.patients.schemas import PatientCreate, PatientUpdate
from registry.text import Line, Text
from registry.users.schemas import UserCreate

BAD_ANYWHERE = ["\x00", "\x01", "\x1b[31m", "\x7f", "\x85", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e",
                "\u2066", "\u2067", "\u2068", "\u2069", "\ud800", "\udfff"]
NEWLINES = ["\n", "\r", "\t"]


@pytest.mark.parametrize("bad", BAD_ANYWHERE + NEWLINES, ids=repr)
def test_a_line_refuses_controls_surrogates_and_bidi_overrides(bad):
    class M(BaseModel):
        v: Line

    with pytest.raises(ValidationError) as exc:
        M(v=f"Ayesha{bad}Khan")
    assert exc.value.errors()[0]["loc"] == ("v",)
    assert "Ayesha" not in str(exc.value.errors()[0]["msg"])


@pytest.mark.parametrize("bad", BAD_ANYWHERE, ids=repr)
def test_free_text_refuses_them_too_but_keeps_newlines_and_tabs(bad):
    class M(BaseModel):
        v: Text

    with pytest.raises(ValidationError):
        M(v=f"fever{bad}rash")
    assert M(v="fever\nrash\r\n\tseen by LHW").v.count("\n") == 2


def test_ordinary_names_in_any_script_pass():
    class M(BaseModel):
        v: Line

    for name in ("Muhammad Abdur Rahman", "عائشہ خان", "Zoë O'Brien-Đặng", "بچہ\u200f of Sana"):  # RLM is allowed
        assert M(v=name).v == name


# Every free-text field of every input schema, with a valid base body: (model, field path, base)
_CHILD = {k: v for k, v in new_child().items()}
FIELDS = [
    (PatientCreate, ("given_name",), _CHILD), (PatientCreate, ("family_name",), _CHILD),
    (PatientCreate, ("address",), _CHILD), (PatientCreate, ("guardian", "name"), _CHILD),
    (PatientUpdate, ("given_name",), {}), (PatientUpdate, ("family_name",), {}), (PatientUpdate, ("address",), {}),
    (DoseCreate, ("override_reason",), {"vaccine": "BCG", "dose_number": 1, "date_given": "2026-06-02"}),
    (DoseCorrection, ("reason",), {"reason": "typo in the date"}), (DoseVoid, ("reason",), {"reason": "entered twice"}),
    (AdverseEventCreate, ("notes",), {"onset_date": "2026-07-14", "symptoms": ["fever"], "seriousness": "non_serious",
                                      "outcome": "recovered"}),
    (FindingIn, ("note",), {"finding": "justified"}),
    (UserCreate, ("display_name",), {"username": "clinic.x", "display_name": "x", "password": "p" * 20,
                                      "role": "clinic_worker", "scope_code": "X"}),
]


@pytest.mark.parametrize(("model", "path", "base"), FIELDS, ids=[f"{m.__name__}.{'.'.join(p)}" for m, p, _ in FIELDS])
@pytest.mark.parametrize("bad", ["\x00", "\u202e", "\x1f"], ids=repr)
def test_every_free_text_field_refuses(model, path, base, bad):
    body = json.loads(json.dumps(base))
    target = body
    for part in path[:-1]:
        target = target.setdefault(part, {}) or target
    target[path[-1]] = f"Sana{bad}Khan"
    model.model_validate(base)  # the base is valid
    with pytest.raises(ValidationError) as exc:
        model.model_validate(body)
    assert [e["loc"] for e in exc.value.errors()] == [path]


def test_the_api_names_the_field_and_echoes_nothing(world, client, runtime):
    body = new_child(given_name="Ayesha\u202eKhan")
    rid = uuid.uuid4().hex
    r = client.post("/api/v1/patients", json=body, headers=world.h("clinic_a", **{"X-Request-ID": rid}))
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in r.json()["errors"]] == ["given_name"]
    assert "Ayesha" not in r.text and "Khan" not in r.text
    child = world.register()
    r = client.patch(f"/api/v1/patients/{child['id']}", json={"guardian": {"name": "Sana\x00"}},
                     headers=world.h("clinic_a", **{"If-Match": '"1"'}))
    assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == ["guardian.name"]
    assert client.get(f"/api/v1/patients/{child['id']}", headers=world.h("clinic_a")).json()["version"] == 1  # nothing written


def test_a_body_that_is_not_utf8_is_invalid_json(world, client):
    h = world.h("clinic_a", **{"content-type": "application/json"})
    not_json = client.post("/api/v1/patients", content=b'{"given_name": ', headers=h)
    for raw in (b'{"given_name": "\xc3\x28"}', b'{"given_name": "\xff"}', b"\xff\xfe{}"):
        r = client.post("/api/v1/patients", content=raw, headers=h)
        assert r.status_code == 422 == not_json.status_code, r.status_code
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["errors"] == not_json.json()["errors"] == [
            {"field": "body", "pointer": "#", "in": "body", "detail": "the body is not valid JSON"}]


def test_an_oversized_body_is_refused_before_it_is_parsed(world, client, runtime):
    limit = runtime.settings.limits.max_body_bytes
    rid = uuid.uuid4().hex
    big = json.dumps(new_child(address="x" * limit)).encode()
    r = client.post("/api/v1/patients", content=big, headers=world.h("clinic_a", **{"content-type": "application/json",
                                                                                     "X-Request-ID": rid}))
    assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["errors"][0]["field"] == "body" and r.json()["request_id"] == rid
    assert audit_events(runtime, request_id=rid) == []  # nothing parsed, nobody identified, nothing touched

    def chunked():  # no Content-Length: the bytes are counted as they arrive
        for _ in range(limit // 1000 + 2):
            yield b" " * 1000

    r = client.post("/api/v1/patients", content=chunked(), headers=world.h("clinic_a", **{"content-type": "application/json"}))
    assert r.status_code == 413
    # Just under the limit is parsed as usual (here: a valid registration).
    ok = client.post("/api/v1/patients", json=new_child(), headers=world.h("clinic_a"))
    assert ok.status_code == 201


def test_batch_routes_have_their_own_limit(world, client, runtime):
    limits = runtime.settings.limits
    assert limits.max_batch_body_bytes > limits.max_body_bytes
    size = limits.max_body_bytes + 10
    padded = b'{"items": [' + b" " * size + b"]}"
    r = client.post("/api/v1/sync/batch", content=padded, headers=world.h("clinic_a", **{"content-type": "application/json"}))
    assert r.status_code == 422  # parsed (an empty batch is invalid), not refused for its size
    fhir = client.post("/fhir/R4", content=b"{" + b" " * (limits.max_batch_body_bytes + 1) + b"}",
                       headers=world.h("clinic_a", **{"content-type": "application/fhir+json"}))
    assert fhir.status_code == 413 and fhir.json()["resourceType"] == "OperationOutcome"


def test_a_break_glass_reason_with_control_characters_is_refused(world, client, runtime):
    child = world.register("clinic_a")
    rid = uuid.uuid4().hex
    r = client.get(f"/api/v1/patients/{child['id']}", headers=world.h(
        "official_other_province", **{"X-Break-Glass-Reason": b"unconscious child \x85 at DHQ", "X-Request-ID": rid}))
    assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == ["X-Break-Glass-Reason"]
    [ev] = audit_events(runtime, request_id=rid)
    assert ev.outcome == "invalid" and ev.break_glass  # the attempt stays on record for the auditor ...
    assert ev.break_glass_reason == UNSAFE_REASON  # ... without the characters
