"""A body that is not JSON is refused after the gate, and the refusal is audited (api/routing.py).

FastAPI parses a JSON body before the route's dependencies run, so such a body used to be
answered 422 before the caller was even authenticated, and the refused attempt left no audit
event. Now: no token -> 401 as for any other body; a token -> 422 "the body is not valid JSON"
(problem+json; on the FHIR routes 400 with an OperationOutcome, as FHIR's REST API asks for a
resource that cannot be parsed) with exactly one `invalid` event naming the caller, the same as a
body that parses but holds a wrong value."""

from __future__ import annotations

import uuid

import pytest

from conftest import audit_events

NOT_JSON = [b'{"given_name": ', b'{"given_name": "\xff"}', b"\xff\xfe{}"]
ROUTES = [  # (path, content type, audited action)
    ("/api/v1/patients", "application/json", "patient.create"),
    ("/api/v1/patients/search", "application/json", "patient.search"),
    ("/api/v1/sync/batch", "application/json", "sync.batch"),
    ("/fhir/R4/Patient", "application/fhir+json", "patient.create"),
    ("/fhir/R4", "application/fhir+json", None),  # a Bundle: its entries' actions; one refusal event
]


def _post(client, world, path, raw, content_type, *, user="clinic_a"):
    rid = uuid.uuid4().hex
    headers = {"content-type": content_type, "X-Request-ID": rid}
    if user:
        headers = world.h(user, **headers)
    return rid, client.post(path, content=raw, headers=headers)


@pytest.mark.parametrize("path,content_type,action", ROUTES, ids=[r[0] for r in ROUTES])
@pytest.mark.parametrize("raw", NOT_JSON, ids=["truncated", "not-utf8-string", "utf16-bom"])
def test_a_body_that_is_not_json_is_refused_after_the_gate_and_audited(world, client, runtime, path, content_type,
                                                                        action, raw):
    rid, r = _post(client, world, path, raw, content_type)
    if path.startswith("/fhir"):
        assert r.status_code == 400, r.text
        assert r.json()["resourceType"] == "OperationOutcome" and r.json()["issue"][0]["code"] == "structure"
    else:
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["errors"] == [{"field": "body", "pointer": "#", "in": "body",
                                       "detail": "the body is not valid JSON"}]
    events = audit_events(runtime, request_id=rid)
    assert [e.outcome for e in events] == ["invalid"], [(e.action, e.outcome) for e in events]
    assert events[0].actor_username == world.users["clinic_a"]  # the caller is named: the gate ran first
    if action:
        assert events[0].action == action


@pytest.mark.parametrize("path,content_type,action", ROUTES, ids=[r[0] for r in ROUTES])
def test_without_a_token_a_body_that_is_not_json_gets_401_first(world, client, runtime, path, content_type, action):
    rid, r = _post(client, world, path, NOT_JSON[0], content_type, user=None)
    assert r.status_code == 401, r.text


def test_a_wrong_value_and_a_body_that_is_not_json_are_audited_alike(world, client, runtime):
    _, wrong = _post(client, world, "/api/v1/patients/search", b'{"system": 5}', "application/json")
    rid, not_json = _post(client, world, "/api/v1/patients/search", b'{"system": ', "application/json")
    assert wrong.status_code == not_json.status_code == 422
    assert [(e.action, e.outcome) for e in audit_events(runtime, request_id=rid)] == [("patient.search", "invalid")]
