"""FHIR R4 at /fhir/R4: read, search, create, recommendation, metadata; OperationOutcome errors;
the same scopes and audit as /api/v1 ("another door to the same rooms")."""

from __future__ import annotations

import uuid

from conftest import audit_events, new_child

from registry.fhir import codes

FHIR = "application/fhir+json"


def _patient(**overrides) -> dict:
    child = new_child()
    res = {
        "resourceType": "Patient",
        "identifier": [{"system": codes.SID_BFORM, "value": child["bform"]}],
        "name": [{"use": "official", "family": child["family_name"], "given": [child["given_name"]]}],
        "gender": "female", "birthDate": "2026-06-01",
        "telecom": [{"system": "phone", "value": child["phone"], "use": "mobile"}],
        "address": [{"line": [child["address"]]}],
        "contact": [{"relationship": [{"coding": [{"system": codes.ROLE_CODE, "code": "MTH"}]}],
                     "name": {"text": child["guardian"]["name"]}}],
    }
    res.update(overrides)
    return res


def _dose(patient_ref: str, vaccine: str = "BCG", dose: int = 1, when: str = "2026-06-02") -> dict:
    return {"resourceType": "Immunization", "status": "completed",
            "vaccineCode": {"coding": [{"system": codes.EPI_ANTIGEN, "code": vaccine}]},
            "patient": {"reference": patient_ref}, "occurrenceDateTime": when,
            "protocolApplied": [{"doseNumberPositiveInt": dose} if dose else {"doseNumberString": "0"}]}


def _events(runtime, r) -> list:
    return audit_events(runtime, request_id=r.headers["X-Request-ID"])


def _create(world, who="clinic_a", **overrides) -> dict:
    r = world.client.post("/fhir/R4/Patient", json=_patient(**overrides), headers=world.h(who, **{"Content-Type": FHIR}))
    assert r.status_code == 201, r.json()
    return r.json()


def test_metadata_is_public_and_states_what_is_served(client):
    r = client.get("/fhir/R4/metadata")
    assert r.status_code == 200 and r.headers["content-type"].startswith(FHIR)
    cs = r.json()
    assert cs["resourceType"] == "CapabilityStatement" and cs["fhirVersion"] == "4.0.1"
    types = {res["type"]: res for res in cs["rest"][0]["resource"]}
    assert set(types) == {"Patient", "Immunization", "ImmunizationRecommendation"}
    assert {p["name"] for p in types["Patient"]["searchParam"]} == {
        "identifier", "birthdate", "gender", "address-state", "address-district"}
    assert {p["name"] for p in types["Immunization"]["searchParam"]} == {"patient", "date", "vaccine-code", "status"}
    assert {i["code"] for i in cs["rest"][0]["interaction"]} == {"transaction", "batch"}


def test_create_read_and_search_a_patient(world, runtime):
    c = world.client
    created = _create(world)
    pid = created["id"]
    assert created["extension"][0]["url"] == codes.EXT_ACCESS_CODE  # shown once, as on /api/v1
    r = c.get(f"/fhir/R4/Patient/{pid}", headers=world.h("clinic_a"))
    assert r.status_code == 200 and r.headers["content-type"].startswith(FHIR)
    assert r.headers["ETag"] == 'W/"1"'
    got = r.json()
    assert "extension" not in got
    assert got["birthDate"] == "2026-06-01" and got["gender"] == "female"
    assert [e.action for e in _events(runtime, r)] == ["patient.read"]

    bform = next(i["value"] for i in created["identifier"] if i["system"] == codes.SID_BFORM)
    r = c.get("/fhir/R4/Patient", params={"identifier": f"{codes.SID_BFORM}|{bform}"}, headers=world.h("clinic_a"))
    assert r.status_code == 200, r.json()
    bundle = r.json()
    assert bundle["type"] == "searchset" and bundle["total"] == 1
    assert bundle["entry"][0]["resource"]["id"] == pid
    assert [(e.action, e.outcome) for e in _events(runtime, r)] == [("patient.search", "success")]
    r = c.post("/fhir/R4/Patient/_search", data={"identifier": f"{codes.SID_BFORM}|{bform}"}, headers=world.h("clinic_a"))
    assert r.status_code == 200 and r.json()["total"] == 1

    r = c.get("/fhir/R4/Patient", params={"birthdate": "2026-06", "gender": "female"}, headers=world.h("clinic_a"))
    assert pid in {e["resource"]["id"] for e in r.json()["entry"]}
    assert [e.action for e in _events(runtime, r)] == ["patient.list"]
    r = c.get("/fhir/R4/Patient", params={"birthdate": "gt2026-06-01"}, headers=world.h("clinic_a"))
    assert pid not in {e["resource"]["id"] for e in r.json().get("entry", [])}


def test_paging_links(world):
    c = world.client
    ids = {_create(world)["id"] for _ in range(3)}
    r = c.get("/fhir/R4/Patient", params={"_count": 2}, headers=world.h("clinic_a"))
    first = r.json()
    nxt = [link["url"] for link in first["link"] if link["relation"] == "next"]
    assert len(first["entry"]) == 2 and nxt
    second = c.get(nxt[0].split("testserver", 1)[1], headers=world.h("clinic_a")).json()
    seen = {e["resource"]["id"] for e in first["entry"] + second["entry"]}
    assert ids <= seen


def test_immunization_create_read_search(world, runtime):
    c = world.client
    pid = _create(world)["id"]
    r = c.post("/fhir/R4/Immunization", json=_dose(f"Patient/{pid}"), headers=world.h("clinic_a"))
    assert r.status_code == 201, r.json()
    assert [e.action for e in _events(runtime, r)] == ["immunization.create"]
    dose = r.json()
    assert {"system": codes.EPI_ANTIGEN, "code": "BCG"}.items() <= dose["vaccineCode"]["coding"][0].items()
    assert any(cd["system"] == codes.CVX for cd in dose["vaccineCode"]["coding"])
    c.post("/fhir/R4/Immunization", json=_dose(f"Patient/{pid}", "OPV", 1, "2026-07-13"), headers=world.h("clinic_a"))

    r = c.get(f"/fhir/R4/Immunization/{dose['id']}", headers=world.h("clinic_a"))
    assert r.status_code == 200 and r.json()["patient"]["reference"] == f"Patient/{pid}"
    assert [e.action for e in _events(runtime, r)] == ["immunization.list"]

    def found(**query):
        r = c.get("/fhir/R4/Immunization", params={"patient": f"Patient/{pid}", **query}, headers=world.h("clinic_a"))
        assert r.status_code == 200, r.json()
        return sorted(e["resource"]["vaccineCode"]["coding"][0]["code"] for e in r.json().get("entry", []))

    assert found() == ["BCG", "OPV"]
    assert found(date="ge2026-07-01") == ["OPV"]
    assert found(date="lt2026-07-01") == ["BCG"]
    assert found(**{"vaccine-code": f"{codes.EPI_ANTIGEN}|OPV"}) == ["OPV"]
    assert found(**{"vaccine-code": f"{codes.CVX}|19"}) == ["BCG"]
    assert found(status="entered-in-error") == []
    r = c.get("/fhir/R4/Immunization", params={"date": "ge2026-06-01"}, headers=world.h("clinic_a"))
    assert {e["resource"]["patient"]["reference"] for e in r.json()["entry"]} >= {f"Patient/{pid}"}


def test_recommendation_from_the_schedule(world, runtime):
    c = world.client
    pid = _create(world)["id"]
    r = c.get(f"/fhir/R4/ImmunizationRecommendation/{pid}", headers=world.h("clinic_a"))
    assert r.status_code == 200, r.json()
    rec = r.json()
    assert rec["patient"]["reference"] == f"Patient/{pid}" and rec["recommendation"]
    first = rec["recommendation"][0]
    assert {d["code"]["coding"][0]["code"] for d in first["dateCriterion"]} == {"30981-5", "30980-7", "59777-3"}
    assert [e.action for e in _events(runtime, r)] == ["immunization.schedule"]
    from registry.fhir.mapping import validate
    validate(rec)


def test_invalid_resource_is_an_operation_outcome_pointing_at_the_element(world, runtime):
    c = world.client
    r = c.post("/fhir/R4/Patient", json=_patient(birthDate="2026-13-01"), headers=world.h("clinic_a"))
    assert r.status_code == 400 and r.headers["content-type"].startswith(FHIR)
    issue = r.json()["issue"][0]
    assert r.json()["resourceType"] == "OperationOutcome" and issue["expression"] == ["Patient.birthDate"]
    assert [(e.action, e.outcome) for e in _events(runtime, r)] == [("patient.create", "invalid")]
    r = c.post("/fhir/R4/Patient", json=_patient(birthDate="2026"), headers=world.h("clinic_a"))
    assert r.status_code == 422 and r.json()["issue"][0]["expression"] == ["Patient.birthDate"]
    r = c.post("/fhir/R4/Patient", json=_patient(address=[{"district": "PK-XX-NOPE"}]), headers=world.h("clinic_a"))
    assert r.status_code == 422 and r.json()["issue"][0]["expression"] == ["Patient.address.district"]
    r = c.post("/fhir/R4/Patient", content=b"{not json", headers=world.h("clinic_a", **{"Content-Type": FHIR}))
    assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"
    r = c.get("/fhir/R4/Nothing", headers=world.h("clinic_a"))
    assert r.status_code == 404 and r.json()["resourceType"] == "OperationOutcome"


def test_same_rooms_other_province_auditor_and_anonymous(world, runtime):
    c = world.client
    created = _create(world)
    pid = created["id"]
    r = c.get(f"/fhir/R4/Patient/{pid}", headers=world.h("clinic_c"))
    assert r.status_code == 404 and r.json()["resourceType"] == "OperationOutcome"
    assert [(e.action, e.outcome) for e in _events(runtime, r)] == [("patient.read", "denied")]
    r = c.get("/fhir/R4/Patient", params={"address-district": "PK-PB-LAH"}, headers=world.h("clinic_c"))
    assert pid not in {e["resource"]["id"] for e in r.json().get("entry", [])}
    # doses follow /api/v1: a visiting child's doses are reachable in search scope (clinics:
    # national), not by an official of another province
    for who, status in (("clinic_c", 200), ("official_other_province", 404)):
        r = c.get("/fhir/R4/Immunization", params={"patient": f"Patient/{pid}"}, headers=world.h(who))
        assert r.status_code == status
        assert c.get(f"/api/v1/patients/{pid}/immunizations", headers=world.h(who)).status_code == status
    r = c.get(f"/fhir/R4/ImmunizationRecommendation/{pid}", headers=world.h("official_other_province"))
    assert r.status_code == 404
    r = c.get(f"/fhir/R4/Patient/{pid}", headers=world.h("auditor"))
    assert r.status_code == 403 and r.json()["issue"][0]["code"] == "forbidden"
    assert [(e.action, e.outcome) for e in _events(runtime, r)] == [("patient.read", "denied")]
    r = c.get(f"/fhir/R4/Patient/{pid}")
    assert r.status_code == 401 and r.headers.get("WWW-Authenticate") == "Bearer"
    # break-glass opens the read, flagged, like /api/v1
    r = c.get(f"/fhir/R4/Patient/{pid}", headers=world.h("official_other_province",
                                                         **{"X-Break-Glass-Reason": "unconscious child at DHQ emergency"}))
    assert r.status_code == 200
    ev = _events(runtime, r)
    assert [(e.action, e.break_glass, e.purpose_of_use) for e in ev] == [("patient.read", True, "ETREAT")]
    # an unknown id is a 404 like any other
    assert c.get(f"/fhir/R4/Patient/{uuid.uuid4()}", headers=world.h("clinic_a")).status_code == 404
    assert c.get("/fhir/R4/Patient/not-a-uuid", headers=world.h("clinic_a")).status_code == 404


def test_immunization_paging_with_and_without_patient(world):
    c = world.client
    pid = _create(world)["id"]
    for vaccine, dose, when in (("BCG", 1, "2026-06-02"), ("OPV", 0, "2026-06-02"), ("HEPB", 1, "2026-06-03")):
        assert c.post("/fhir/R4/Immunization", json=_dose(f"Patient/{pid}", vaccine, dose, when),
                      headers=world.h("clinic_a")).status_code == 201

    def walk(params):
        seen, url, query = [], "/fhir/R4/Immunization", {**params, "_count": 2}
        while url:
            page = c.get(url, params=query, headers=world.h("clinic_a")).json()
            seen += [e["resource"]["id"] for e in page.get("entry", [])]
            nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
            url, query = (nxt[0].split("testserver", 1)[1], None) if nxt else (None, None)
        return seen

    by_patient = walk({"patient": f"Patient/{pid}"})
    assert len(by_patient) == len(set(by_patient)) == 3
    in_scope = walk({"date": "ge2026-06-02"})
    assert set(by_patient) <= set(in_scope) and len(in_scope) == len(set(in_scope))
    r = c.get("/fhir/R4/Immunization", params={"patient": pid, "_cursor": "garbage"}, headers=world.h("clinic_a"))
    assert r.status_code == 400 and r.json()["issue"][0]["expression"] == ["_cursor"]
