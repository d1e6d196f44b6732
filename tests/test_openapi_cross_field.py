"""The OpenAPI document states the cross-field rules of registration and dose recording as JSON
Schema (if/then/else), and the API agrees with it both ways (issue 18): a body the schema accepts
is not refused for these rules, and one it refuses is answered 422 naming the field. (The
schemathesis run in tests/test_api_contract.py holds every operation to this in general.)"""

from __future__ import annotations

import jsonschema
import pytest

from conftest import new_child, unique_nadra


@pytest.fixture(scope="module")
def validators(app) -> dict:
    spec = app.openapi()

    def validator(name: str):
        # OpenAPI 3.1 schemas are JSON Schema 2020-12; the components travel along for the $refs
        return jsonschema.Draft202012Validator({**spec["components"]["schemas"][name], "components": spec["components"]})
    return {"patient": validator("PatientCreate"), "dose": validator("DoseCreate")}


def _newborn(**overrides) -> dict:
    body = new_child(guardian={"name": "Invented Mother", "relationship": "mother", "cnic": unique_nadra()})
    del body["given_name"], body["family_name"], body["bform"]
    return {**body, "unnamed": True, **overrides}


PATIENTS = [  # (case, body factory, field the API and the schema refuse, or None)
    ("named", lambda: new_child(), None),
    ("named, unnamed false", lambda: new_child(unnamed=False), None),
    ("unnamed newborn", lambda: _newborn(), None),
    ("no given name, not unnamed", lambda: {k: v for k, v in new_child().items() if k != "given_name"}, "given_name"),
    ("given name null", lambda: new_child(given_name=None), "given_name"),
    ("unnamed with a given name", lambda: _newborn(given_name="Invented"), "given_name"),
    ("unnamed, father", lambda: _newborn(guardian={"name": "Invented Father", "relationship": "father"}),
     "guardian.relationship"),
    ("unnamed, mother without a name", lambda: _newborn(guardian={"relationship": "mother"}), "guardian.name"),
    ("unnamed, no guardian", lambda: _newborn(guardian=None), "guardian.name"),
]

DOSES = [
    ("completed", {}, None),
    ("not-done with a reason", {"status": "not-done", "not_done_reason": "stock-out"}, None),
    ("not-done without a reason", {"status": "not-done"}, "not_done_reason"),
    ("not-done, reason not in the value set", {"status": "not-done", "not_done_reason": "bored"}, "not_done_reason"),
    ("completed with a reason", {"not_done_reason": "stock-out"}, "not_done_reason"),
    ("not-done with a lot number", {"status": "not-done", "not_done_reason": "stock-out", "lot_number": "PN1"},
     "lot_number"),
    ("not-done with an override", {"status": "not-done", "not_done_reason": "child-absent",
                                   "override_reason": "recorded anyway for the test"}, "override_reason"),
]


@pytest.mark.parametrize(("case", "make", "field"), PATIENTS, ids=[c for c, _, _ in PATIENTS])
def test_registration_schema_and_api_agree(shared_world, validators, case, make, field):
    body = make()
    schema_ok = validators["patient"].is_valid(body)
    r = shared_world.client.post("/api/v1/patients", json=body, headers=shared_world.h("clinic_a"))
    assert schema_ok is (field is None), case
    if field is None:
        assert r.status_code == 201, r.json().get("errors")
    else:
        assert r.status_code == 422 and field in {e["field"] for e in r.json()["errors"]}, r.json().get("errors")


@pytest.mark.parametrize(("case", "extra", "field"), DOSES, ids=[c for c, _, _ in DOSES])
def test_dose_schema_and_api_agree(shared_world, validators, case, extra, field):
    w = shared_world
    pid = w.register("clinic_a", birth_date="2026-06-01")["id"]
    body = {"vaccine": "BCG", "dose_number": 1, "date_given": "2026-06-02", **extra}
    schema_ok = validators["dose"].is_valid(body)
    r = w.client.post(f"/api/v1/patients/{pid}/immunizations", json=body, headers=w.h("clinic_a"))
    assert schema_ok is (field is None), case
    if field is None:
        assert r.status_code == 201, r.json().get("errors")
    else:
        assert r.status_code == 422 and field in {e["field"] for e in r.json()["errors"]}, r.json().get("errors")
