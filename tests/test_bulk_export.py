"""FHIR Bulk Data $export: kick-off, polling, manifest, download, cancel, expiry; scope (an
official of another province gets nothing of this one), ownership (nobody else may poll or
download), roles (a clinic worker is refused) and audit (every download names its subjects)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from conftest import audit_events
from registry.bulk import importer
from registry.bulk.models import ExportJob
from registry.fhir.mapping import validate
from security.audit.models import AuditEventSubjectRow

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


def _since() -> str:
    # The same clock stamps the records (the app runs in this process), so "now" is exact; a
    # margin would let in records that other tests in this module created just before.
    return datetime.now(UTC).isoformat()


def _kickoff(world, who: str, since: str, path: str = "/fhir/R4/$export", **params):
    r = world.client.get(path, params={"_since": since, **params}, headers=world.h(who, **ASYNC))
    assert r.status_code == 202, r.text
    return r.headers["Content-Location"].split("/fhir/R4/bulk-export/")[1]


def _finish(world, who: str, job: str) -> dict:
    for _ in range(200):
        r = world.client.get(f"/fhir/R4/bulk-export/{job}", headers=world.h(who))
        if r.status_code == 200:
            return r.json()
        assert r.status_code == 202 and "X-Progress" in r.headers, r.text
    raise AssertionError("the export never completed")


def _download(world, who: str, url: str) -> list[dict]:
    path = url[url.index("/fhir/R4/"):]
    r = world.client.get(path, headers=world.h(who))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/fhir+ndjson")
    return [json.loads(line) for line in r.text.splitlines() if line]


@pytest.fixture
def data(world, runtime, monkeypatch):
    monkeypatch.setattr(runtime.settings.bulk_export, "step_rows", 2)
    monkeypatch.setattr(runtime.settings.bulk_export, "file_rows", 2)
    since = _since()
    lahore = [world.register("clinic_a") for _ in range(3)]
    for p in lahore:
        r = world.client.post(f"/api/v1/patients/{p['id']}/immunizations", headers=world.h("clinic_a"),
                              json={"vaccine": "BCG", "dose_number": 1, "date_given": p["birth_date"]})
        assert r.status_code == 201
    karachi = world.register("clinic_c")
    return {"since": since, "lahore": {p["id"] for p in lahore}, "karachi": karachi["id"]}


def test_export_flow_scope_and_audit(world, runtime, data, tmp_path):
    job = _kickoff(world, "official_province", data["since"])
    manifest = _finish(world, "official_province", job)
    assert manifest["requiresAccessToken"] is True and manifest["error"] == []
    assert "$export" in manifest["request"] and datetime.fromisoformat(manifest["transactionTime"])
    by_type: dict[str, list] = {}
    for out in manifest["output"]:
        resources = _download(world, "official_province", out["url"])
        assert len(resources) == out["count"]
        by_type.setdefault(out["type"], []).extend(resources)
    for resources in by_type.values():
        for res in resources:
            validate(res)  # every line is a valid FHIR R4 resource
    assert {p["id"] for p in by_type["Patient"]} == data["lahore"]  # nothing of Sindh
    assert {i["patient"]["reference"].rsplit("/", 1)[1] for i in by_type["Immunization"]} == data["lahore"]
    assert len([o for o in manifest["output"] if o["type"] == "Patient"]) == 2  # 3 patients, 2 per file

    # round trip: the export is a valid import file, and importing it again creates nothing
    back = tmp_path / "export.ndjson"
    back.write_text("".join(json.dumps(r) + "\n" for r in by_type["Patient"] + by_type["Immunization"]))
    again = importer.run(runtime, back, username=world.users["clinic_a"])
    assert (again.imported, again.rejected) == (0, 6)
    report = tmp_path / "again.csv"
    importer.write_error_report(runtime, again.run_id, report)
    assert {line.split(",")[2].strip() for line in report.read_text().splitlines()[1:]} == {"already_exists"}

    downloads = [e for e in audit_events(runtime, action="bulk.export.download") if e.resource_id == job]
    assert len(downloads) == len(manifest["output"]) and all(e.outcome == "success" for e in downloads)
    with runtime.sessions() as s:
        subjects = {str(r.patient_id) for r in s.query(AuditEventSubjectRow)
                    .filter(AuditEventSubjectRow.event_id.in_([e.id for e in downloads]))}
    assert subjects == data["lahore"]
    assert [e.outcome for e in audit_events(runtime, action="bulk.export") if e.resource_id == job] == ["success"]

    # an official of another province exports its own jurisdiction: nothing of Punjab
    other = _kickoff(world, "official_other_province", data["since"], path="/fhir/R4/Patient/$export", _type="Patient")
    m2 = _finish(world, "official_other_province", other)
    ids = {r["id"] for o in m2["output"] for r in _download(world, "official_other_province", o["url"])}
    assert data["karachi"] in ids and not ids & data["lahore"]
    assert {o["type"] for o in m2["output"]} == {"Patient"}


def test_only_the_owner_may_poll_download_or_cancel(world, runtime, data):
    job = _kickoff(world, "official_province", data["since"])
    manifest = _finish(world, "official_province", job)
    url = manifest["output"][0]["url"]
    for who in ("official_other_province", "official_national"):
        assert world.client.get(f"/fhir/R4/bulk-export/{job}", headers=world.h(who)).status_code == 404
        assert world.client.get(url[url.index("/fhir/R4/"):], headers=world.h(who)).status_code == 404
        assert world.client.delete(f"/fhir/R4/bulk-export/{job}", headers=world.h(who)).status_code == 404
    denied = [e for e in audit_events(runtime, resource_id=job) if e.outcome == "denied"]
    assert len(denied) == 6 and {e.actor_username for e in denied} == {world.users["official_other_province"],
                                                                        world.users["official_national"]}
    # the owner cancels: the job and its files are gone
    assert world.client.delete(f"/fhir/R4/bulk-export/{job}", headers=world.h("official_province")).status_code == 202
    assert world.client.get(f"/fhir/R4/bulk-export/{job}", headers=world.h("official_province")).status_code == 404
    assert world.client.get(url[url.index("/fhir/R4/"):], headers=world.h("official_province")).status_code == 404


def test_clinic_workers_auditors_and_admins_are_refused(world, runtime):
    for who in ("clinic_a", "auditor", "admin"):
        r = world.client.get("/fhir/R4/$export", headers=world.h(who, **ASYNC))
        assert r.status_code == 403, who
    refused = [e for e in audit_events(runtime, action="bulk.export") if e.actor_username == world.users["clinic_a"]]
    assert refused and refused[-1].outcome == "denied"


def test_kickoff_validation_and_expiry(world, runtime, data):
    h = world.h("official_province")
    assert world.client.get("/fhir/R4/$export", headers=h).status_code in (400, 422)  # no Prefer: respond-async
    r = world.client.get("/fhir/R4/$export", params={"_type": "Observation"}, headers=world.h("official_province", **ASYNC))
    assert r.status_code in (400, 422)
    r = world.client.get("/fhir/R4/$export", params={"_outputFormat": "text/csv"}, headers=world.h("official_province", **ASYNC))
    assert r.status_code in (400, 422)
    job = _kickoff(world, "official_province", data["since"])
    with runtime.sessions.begin() as s:
        s.execute(update(ExportJob).where(ExportJob.id == uuid.UUID(job)).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert world.client.get(f"/fhir/R4/bulk-export/{job}", headers=h).status_code == 404


def test_capability_statement_declares_export(world):
    r = world.client.get("/fhir/R4/metadata")
    assert r.status_code == 200
    ops = {op["name"]: op for op in r.json()["rest"][0].get("operation", [])}
    assert ops["export"]["definition"] == "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"


def test_errors_under_fhir_are_operation_outcomes(world):
    r = world.client.get("/fhir/R4/$export", headers=world.h("official_province"))
    assert r.status_code in (400, 422) and r.json()["resourceType"] == "OperationOutcome"
