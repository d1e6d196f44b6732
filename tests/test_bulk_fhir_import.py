"""`nhr import` of FHIR NDJSON and Bundle files: resources validated with fhir.resources and
mapped like the FHIR API maps them; urn:uuid references resolved inside a Bundle; invalid
lines reported by element and reason code, never by value."""

from __future__ import annotations

import csv
import json
import uuid

import pytest

from conftest import audit_events, unique_nadra
from registry.bulk import importer
from registry.fhir import codes


def _patient(pid: str | None, given: str, bform: str, **over) -> dict:
    res = {"resourceType": "Patient", "name": [{"given": [given], "family": "Durrani"}], "gender": "male",
           "birthDate": "2026-05-01", "identifier": [{"system": codes.SID_BFORM, "value": bform}]}
    if pid:
        res["id"] = pid
    res.update(over)
    return res


def _dose(patient_ref: str, vaccine: str = "BCG", dose: int = 1, when: str = "2026-05-02") -> dict:
    return {"resourceType": "Immunization", "status": "completed", "vaccineCode": codes.vaccine_codeable(vaccine),
            "patient": {"reference": patient_ref}, "occurrenceDateTime": when, "protocolApplied": [{"doseNumberPositiveInt": dose}]}


@pytest.mark.parametrize("workers", [1, 2])
def test_ndjson_import(world, runtime, tmp_path, workers):
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    bad = _patient(None, "Shahrukhzaman", unique_nadra())
    del bad["birthDate"]
    lines = [
        _patient(a, "Gulrezkhan", unique_nadra()), _dose(f"Patient/{a}"),
        _patient(b, "Bahramand", unique_nadra()), _dose(f"Patient/{b}", "PENTA", 1, "2026-06-12"),
        bad, {"resourceType": "Observation", "status": "final"}, _dose(f"Patient/{uuid.uuid4()}"),
        _dose(f"Patient/{a}", "BCG", 1, "2026-05-03"),
    ]
    f = tmp_path / "day.ndjson"
    f.write_text("\n".join(json.dumps(x) for x in lines) + "\n{not json\n")
    res = importer.run(runtime, f, username=world.users["clinic_a"], chunk_size=2, workers=workers)
    assert (res.file_format, res.imported, res.rejected) == ("fhir-ndjson", 4, 5)
    r = world.client.get(f"/api/v1/patients/{a}", headers=world.h("clinic_a"))
    assert r.status_code == 200 and r.json()["given_name"] == "Gulrezkhan"
    doses = world.client.get(f"/api/v1/patients/{b}/immunizations", headers=world.h("clinic_a")).json()
    assert [(d["vaccine"], d["dose_number"]) for d in doses] == [("PENTA", 1)]
    report = tmp_path / "r.csv"
    importer.write_error_report(runtime, res.run_id, report)
    got = {(x["row"], x["field"], x["reason"]) for x in csv.DictReader(open(report))}
    assert got == {("5", "Patient.birthDate", "fhir_invalid"), ("6", "resourceType", "unsupported_type"),
                   ("7", "patient_id", "unknown_patient"), ("8", "dose_number", "duplicate_dose"), ("9", "row", "json_invalid")}
    assert "Shahrukhzaman" not in report.read_text()
    assert [e for e in audit_events(runtime, action="immunization.import") if e.detail.get("run") == str(res.run_id)]


def test_bundle_import_resolves_urn_references(world, runtime, tmp_path):
    urn_a, urn_b = f"urn:uuid:{uuid.uuid4()}", f"urn:uuid:{uuid.uuid4()}"
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": urn_a, "resource": _patient(None, "Sherdil", unique_nadra()), "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": _dose(urn_a), "request": {"method": "POST", "url": "Immunization"}},
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": _dose(urn_b, "OPV", 1, "2026-06-12")},
        {"fullUrl": urn_b, "resource": _patient(None, "Zarbadshah", unique_nadra())},
    ]}
    f = tmp_path / "b.json"
    f.write_text(json.dumps(bundle))
    res = importer.run(runtime, f, username=world.users["clinic_a"])
    assert (res.file_format, res.imported, res.rejected) == ("fhir-bundle", 4, 0)
    for urn, vaccine in ((urn_a, "BCG"), (urn_b, "OPV")):
        pid = urn.removeprefix("urn:uuid:")
        assert world.client.get(f"/api/v1/patients/{pid}", headers=world.h("clinic_a")).status_code == 200
        doses = world.client.get(f"/api/v1/patients/{pid}/immunizations", headers=world.h("clinic_a")).json()
        assert [d["vaccine"] for d in doses] == [vaccine]
    # rerunning the same Bundle creates nothing
    again = importer.run(runtime, f, username=world.users["clinic_a"])
    assert again.resumed_from == 4 and again.imported == 4


def test_spec_examples_in_an_ndjson_file(world, runtime, tmp_path, monkeypatch):
    """The FHIR specification's Patient example imports (what NHR represents of it), and so does
    its Immunization example (issue 12: influenza, subpotent, given by a practitioner: a reported
    dose, its `Patient/example` reference resolved within the file)."""
    from pathlib import Path

    # other tests register the same example in this database: the duplicate check (issue 13,
    # tests/test_linkage_registration.py) would reject it as a likely duplicate
    monkeypatch.setattr(runtime.settings, "linkage_check", False)

    data = Path(__file__).parent / "data" / "fhir"
    lines = [json.loads((data / n).read_text(encoding="utf-8")) for n in ("patient-example.json", "immunization-example.json")]
    f = tmp_path / "spec.ndjson"
    f.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    res = importer.run(runtime, f, username=world.users["clinic_a"])
    assert (res.imported, res.rejected) == (2, 0)
    from registry.bulk.sources import derived_id, file_sha256

    pid = derived_id(file_sha256(f), 1)  # "example" is not a UUID: the id derives from the file and row
    body = world.client.get(f"/api/v1/patients/{pid}", headers=world.h("clinic_a")).json()
    assert (body["family_name"], body["birth_date"]) == ("Chalmers", "1974-12-25")
    dose, = world.client.get(f"/api/v1/patients/{pid}/immunizations", headers=world.h("clinic_a")).json()
    assert (dose["vaccine"], dose["provenance"], dose["code"]["code"]) == ("SUBPOTENT", "reported", "FLUVAX")
