"""FHIR is another door to the same rooms: each FHIR request writes the audit event of its /api/v1
twin, with the same purpose of use and scope decisions; errors carry no patient data."""

from __future__ import annotations

import uuid

import pytest
from conftest import audit_events
from test_fhir_api import _create, _dose, _patient
from test_fhir_bundles import _bundle, _entry

from registry.fhir import capability, codes


def _one_event(runtime, r):
    events = audit_events(runtime, request_id=r.headers["X-Request-ID"])
    assert len(events) == 1, [e.action for e in events]
    return events[0]


def test_each_fhir_request_writes_one_event_with_the_api_v1_action(world, runtime):
    c = world.client
    created = _create(world)
    pid = created["id"]
    bform = next(i["value"] for i in created["identifier"] if i["system"] == codes.SID_BFORM)
    dose = c.post("/fhir/R4/Immunization", json=_dose(f"Patient/{pid}"), headers=world.h("clinic_a")).json()
    pairs = [  # (FHIR request, /api/v1 twin)
        (lambda h: c.get(f"/fhir/R4/Patient/{pid}", headers=h), lambda h: c.get(f"/api/v1/patients/{pid}", headers=h)),
        (lambda h: c.get("/fhir/R4/Patient", params={"identifier": f"{codes.SID_BFORM}|{bform}"}, headers=h),
         lambda h: c.post("/api/v1/patients/search", json={"system": "bform", "value": bform}, headers=h)),
        (lambda h: c.get("/fhir/R4/Patient", headers=h), lambda h: c.get("/api/v1/patients", headers=h)),
        (lambda h: c.get("/fhir/R4/Immunization", params={"patient": pid}, headers=h),
         lambda h: c.get(f"/api/v1/patients/{pid}/immunizations", headers=h)),
        (lambda h: c.get(f"/fhir/R4/ImmunizationRecommendation/{pid}", headers=h),
         lambda h: c.get(f"/api/v1/patients/{pid}/schedule", headers=h)),
        (lambda h: c.post("/fhir/R4/Immunization", json=_dose(f"Patient/{pid}", "OPV", 1, "2026-07-13"), headers=h),
         lambda h: c.post(f"/api/v1/patients/{pid}/immunizations", headers=h,
                          json={"vaccine": "PCV", "dose_number": 1, "date_given": "2026-07-13"})),
    ]
    h = world.h("clinic_a", **{"X-Purpose-Of-Use": "CAREMGT"})
    for fhir, v1 in pairs:
        rf, rv = fhir(h), v1(h)
        assert rf.status_code in (200, 201) and rv.status_code in (200, 201), (rf.json(), rv.json())
        ef, ev = _one_event(runtime, rf), _one_event(runtime, rv)
        assert (ef.action, ef.outcome, ef.purpose_of_use, ef.patient_id) == (ev.action, ev.outcome, ev.purpose_of_use, ev.patient_id)
        assert ef.purpose_of_use == "CAREMGT"
    r = c.get(f"/fhir/R4/Immunization/{dose['id']}", headers=h)
    assert _one_event(runtime, r).action == "immunization.list"


@pytest.mark.parametrize("who, status", [("clinic_c", 404), ("official_other_province", 404), ("official_province", 200),
                                         ("auditor", 403), ("admin", 403)])
def test_patient_read_by_role_and_scope_matches_api_v1(world, runtime, who, status):
    pid = _create(world)["id"]
    rf = world.client.get(f"/fhir/R4/Patient/{pid}", headers=world.h(who))
    rv = world.client.get(f"/api/v1/patients/{pid}", headers=world.h(who))
    assert rf.status_code == rv.status_code == status
    if status != 200:
        assert rf.json()["resourceType"] == "OperationOutcome"
        assert (_one_event(runtime, rf).outcome, _one_event(runtime, rv).outcome) == ("denied", "denied")


def test_another_province_cannot_find_the_patient_by_listing(world):
    c = world.client
    pid = _create(world)["id"]
    c.post("/fhir/R4/Immunization", json=_dose(f"Patient/{pid}"), headers=world.h("clinic_a"))
    for who in ("clinic_c", "official_other_province"):
        r = c.get("/fhir/R4/Patient", params={"birthdate": "2026-06-01", "_count": 100}, headers=world.h(who))
        assert pid not in {e["resource"]["id"] for e in r.json().get("entry", [])}
        r = c.get("/fhir/R4/Immunization", params={"date": "2026-06-02", "_count": 100}, headers=world.h(who))
        assert f"Patient/{pid}" not in {e["resource"]["patient"]["reference"] for e in r.json().get("entry", [])}
    r = c.get("/fhir/R4/Patient", params={"birthdate": "2026-06-01", "_count": 100}, headers=world.h("official_district"))
    assert pid in {e["resource"]["id"] for e in r.json()["entry"]}


def test_purpose_of_use_is_checked_as_on_api_v1(world, runtime):
    pid = _create(world)["id"]
    r = world.client.get(f"/fhir/R4/Patient/{pid}", headers=world.h("clinic_a", **{"X-Purpose-Of-Use": "HSYSADMIN"}))
    assert r.status_code == 422 and r.json()["issue"][0]["expression"] == ["X-Purpose-Of-Use"]
    assert _one_event(runtime, r).outcome == "invalid"


def test_errors_carry_no_patient_data(world):
    c = world.client
    first = _create(world)
    bform = next(i["value"] for i in first["identifier"] if i["system"] == codes.SID_BFORM)
    dup = _patient(identifier=[{"system": codes.SID_BFORM, "value": bform}])
    r = c.post("/fhir/R4/Patient", json=dup, headers=world.h("clinic_a"))
    assert r.status_code == 409 and bform not in r.text and bform.replace("-", "") not in r.text
    bad_phone = "0399-12"
    r = c.post("/fhir/R4/Patient", json=_patient(telecom=[{"system": "phone", "value": bad_phone}]), headers=world.h("clinic_a"))
    assert r.status_code == 422 and bad_phone not in r.text
    assert r.json()["issue"][0]["expression"] == ["Patient.telecom[0].value"]
    r = c.post("/fhir/R4/Patient", json=_patient(birthDate="2026-02-31"), headers=world.h("clinic_a"))
    assert r.status_code == 400 and "2026-02-31" not in r.text


def test_plain_json_is_accepted_and_negotiated(world):
    r = world.client.post("/fhir/R4/Patient", json=_patient(), headers=world.h("clinic_a", **{"Accept": "application/json"}))
    assert r.status_code == 201 and r.headers["content-type"].startswith("application/json")
    r = world.client.get(f"/fhir/R4/Patient/{r.json()['id']}", headers=world.h("clinic_a"))
    assert r.headers["content-type"].startswith("application/fhir+json")


def test_unknown_parameters_and_unresolved_references_are_refused(world):
    c = world.client
    r = c.get("/fhir/R4/Patient", params={"name": "x"}, headers=world.h("clinic_a"))
    assert r.status_code == 400 and r.json()["issue"][0]["expression"] == ["name"]
    r = c.post("/fhir/R4/Immunization", json=_dose(f"urn:uuid:{uuid.uuid4()}"), headers=world.h("clinic_a"))
    assert r.status_code == 422 and r.json()["issue"][0]["expression"] == ["Immunization.patient"]
    body = _bundle("transaction", _entry(_dose(f"urn:uuid:{uuid.uuid4()}")))
    r = c.post("/fhir/R4", json=body, headers=world.h("clinic_a"))
    assert r.status_code == 422 and r.json()["issue"][0]["expression"] == ["Bundle.entry[0].resource.patient"]


def test_capability_statement_takes_a_system_operation_in_one_call(client, monkeypatch):
    monkeypatch.setattr(capability, "SYSTEM_OPERATIONS", [])
    capability.add_system_operation("export", "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export")
    capability.add_system_operation("export", "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export")
    ops = client.get("/fhir/R4/metadata").json()["rest"][0]["operation"]
    assert ops == [{"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"}]


def test_malformed_identifier_and_header_name_the_parameter(world, runtime):
    c = world.client
    r = c.get("/fhir/R4/Patient", params={"identifier": f"{codes.SID_BFORM}|12-34"}, headers=world.h("clinic_a"))
    assert r.status_code == 422 and r.json()["issue"][0]["expression"] == ["identifier"]
    assert (_one_event(runtime, r).action, _one_event(runtime, r).outcome) == ("patient.search", "invalid")
    r = c.post("/fhir/R4/Patient", json=_patient(), headers=world.h("clinic_a", **{"If-None-Exist": "identifier=" + "9" * 300}))
    assert r.status_code == 400 and r.json()["issue"][0]["expression"] == ["If-None-Exist"]
    r = c.get("/fhir/R4/Patient", params={"gender": "http://hl7.org/fhir/administrative-gender|female", "_count": 1},
              headers=world.h("clinic_a"))
    assert r.status_code == 200
