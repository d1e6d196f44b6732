"""POST /fhir/R4: transaction (all or nothing) and batch (each entry on its own) Bundles,
urn:uuid references inside the Bundle, conditional create on identifiers."""

from __future__ import annotations

import uuid

from conftest import audit_events, count_events
from test_fhir_api import _dose, _patient
from sqlalchemy import func, select

from registry.fhir import codes
from registry.immunizations.repository import DOSES
from registry.patients.repository import PATIENTS


def _entry(resource: dict, full_url: str | None = None, if_none_exist: str | None = None) -> dict:
    request = {"method": "POST", "url": resource["resourceType"]}
    if if_none_exist:
        request["ifNoneExist"] = if_none_exist
    return {"fullUrl": full_url or f"urn:uuid:{uuid.uuid4()}", "resource": resource, "request": request}


def _bundle(kind: str, *entries) -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def _counts(runtime) -> tuple[int, int]:
    with runtime.sessions() as s:
        return (s.execute(select(func.count()).select_from(PATIENTS)).scalar_one(),
                s.execute(select(func.count()).select_from(DOSES)).scalar_one())


def _bform(res: dict) -> str:
    return next(i["value"] for i in res["identifier"] if i["system"] == codes.SID_BFORM)


def test_transaction_creates_patient_and_doses_resolving_urn_uuid(world, runtime):
    ref = f"urn:uuid:{uuid.uuid4()}"
    body = _bundle("transaction", _entry(_dose(ref, "OPV", 0, "2026-06-01")), _entry(_patient(), ref),
                   _entry(_dose(ref, "BCG", 1, "2026-06-02")))
    r = world.client.post("/fhir/R4", json=body, headers=world.h("clinic_a"))
    assert r.status_code == 200, r.json()
    out = r.json()
    assert out["type"] == "transaction-response"
    assert [e["response"]["status"] for e in out["entry"]] == ["201 Created"] * 3
    pid = out["entry"][1]["resource"]["id"]
    assert out["entry"][0]["resource"]["patient"]["reference"] == f"Patient/{pid}"
    assert out["entry"][1]["response"]["location"].startswith(f"Patient/{pid}")
    actions = sorted(e.action for e in audit_events(runtime, request_id=r.headers["X-Request-ID"]))
    assert actions == ["immunization.create", "immunization.create", "patient.create"]


def test_a_refused_transaction_leaves_nothing_written(world, runtime):
    ref = f"urn:uuid:{uuid.uuid4()}"
    bad = _dose(ref, "BCG", 1, "2026-05-01")  # before the birth date: refused by the dose service
    body = _bundle("transaction", _entry(_patient(), ref), _entry(_dose(ref, "OPV", 0, "2026-06-01")), _entry(bad))
    before = _counts(runtime)
    r = world.client.post("/fhir/R4", json=body, headers=world.h("clinic_a"))
    assert r.status_code == 422 and r.json()["resourceType"] == "OperationOutcome"
    assert r.json()["issue"][0]["expression"] == ["Bundle.entry[2].resource.occurrenceDateTime"]
    assert _counts(runtime) == before
    events = audit_events(runtime, request_id=r.headers["X-Request-ID"])
    assert [(e.action, e.outcome) for e in events] == [("immunization.create", "invalid")]


def test_transaction_with_an_invalid_resource_is_a_400_naming_the_entry(world, runtime):
    body = _bundle("transaction", _entry(_patient()), _entry(_patient(gender="girl")))
    before = _counts(runtime)
    r = world.client.post("/fhir/R4", json=body, headers=world.h("clinic_a"))
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == ["Bundle.entry[1].resource.gender"]
    assert _counts(runtime) == before


def test_batch_entries_succeed_or_fail_on_their_own(world, runtime):
    ok = _patient()
    body = _bundle("batch", _entry(ok), _entry(_patient(birthDate="2026")),
                   _entry(_dose(f"Patient/{uuid.uuid4()}")), _entry(_patient(gender="girl")))
    before = _counts(runtime)
    r = world.client.post("/fhir/R4", json=body, headers=world.h("clinic_a"))
    assert r.status_code == 200, r.json()
    out = r.json()
    assert out["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in out["entry"]]
    assert statuses == ["201 Created", "422 Unprocessable Entity", "404 Not Found", "400 Bad Request"]
    assert out["entry"][3]["response"]["outcome"]["issue"][0]["expression"] == ["Bundle.entry[3].resource.gender"]
    assert _counts(runtime) == (before[0] + 1, before[1])
    events = audit_events(runtime, request_id=r.headers["X-Request-ID"])
    assert sorted((e.action, e.outcome) for e in events) == [
        ("immunization.create", "not_found"), ("patient.create", "invalid"), ("patient.create", "invalid"),
        ("patient.create", "success")]


def test_conditional_create_returns_the_existing_patient(world, runtime):
    first = world.client.post("/fhir/R4/Patient", json=_patient(), headers=world.h("clinic_a")).json()
    condition = f"identifier={codes.SID_BFORM}|{_bform(first)}"
    again = _patient(identifier=[{"system": codes.SID_BFORM, "value": _bform(first)}])
    before = _counts(runtime)
    r = world.client.post("/fhir/R4", json=_bundle("transaction", _entry(again, if_none_exist=condition)),
                          headers=world.h("clinic_a"))
    assert r.status_code == 200, r.json()
    entry = r.json()["entry"][0]
    assert entry["response"]["status"] == "200 OK" and entry["resource"]["id"] == first["id"]
    assert _counts(runtime) == before
    r = world.client.post("/fhir/R4/Patient", json=again, headers=world.h("clinic_a", **{"If-None-Exist": condition}))
    assert r.status_code == 200 and r.json()["id"] == first["id"]
    # without the condition the duplicate identifier is refused (409), as on /api/v1
    r = world.client.post("/fhir/R4/Patient", json=again, headers=world.h("clinic_a"))
    assert r.status_code == 409 and r.json()["issue"][0]["code"] == "duplicate"


def test_bundles_are_refused_to_roles_that_cannot_write(world, runtime):
    for who in ("auditor", "official_national"):
        world.token(who)
    before = count_events(runtime)
    for who in ("auditor", "official_national"):
        r = world.client.post("/fhir/R4", json=_bundle("batch", _entry(_patient())), headers=world.h(who))
        assert r.status_code == 403 and r.json()["resourceType"] == "OperationOutcome"
    assert count_events(runtime) == before + 2


def test_bundle_shape_errors(world):
    c = world.client
    for body, where in (({"resourceType": "Bundle", "type": "collection", "entry": []}, "Bundle.type"),
                        ({"resourceType": "Bundle", "type": "batch", "entry": []}, "Bundle.entry"),
                        ({"resourceType": "Patient"}, "Bundle.resourceType")):
        r = c.post("/fhir/R4", json=body, headers=world.h("clinic_a"))
        assert r.status_code == 400 and r.json()["issue"][0]["expression"] == [where]
    put = {"resource": _patient(), "request": {"method": "PUT", "url": "Patient/x"}}
    r = c.post("/fhir/R4", json=_bundle("transaction", put), headers=world.h("clinic_a"))
    assert r.status_code == 400 and r.json()["issue"][0]["expression"] == ["Bundle.entry[0].request.method"]
