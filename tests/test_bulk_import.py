"""`nhr import` end to end on the real database: CSV patients and doses, the error report,
resuming after an interruption, refusals, and the CLI. Values are compared, never printed."""

from __future__ import annotations

import csv
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from typer.testing import CliRunner

from conftest import audit_events, is_postgres, new_child
from registry.bulk import importer, sources
from registry.bulk.models import ImportRun
from registry.errors import Conflict, Forbidden
from registry.immunizations.models import Immunization
from registry.patients.models import Patient
from registry.reports.models import DirtyPatient
from security.audit.models import AuditEventSubjectRow

PATIENT_HEADER = list(sources.PATIENT_COLUMNS)


def _patient_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, PATIENT_HEADER)
        w.writeheader()
        w.writerows(rows)
    return path


def _row(**over) -> dict:
    c = new_child()
    row = {"id": str(uuid.uuid4()), "given_name": c["given_name"], "family_name": c["family_name"], "sex": "female",
           "birth_date": "2026-06-01", "bform": c["bform"], "cnic": "", "guardian_name": c["guardian"]["name"],
           "guardian_relationship": "mother", "guardian_cnic": c["guardian"]["cnic"], "phone": c["phone"],
           "address": c["address"], "district": ""}
    row.update(over)
    return row


def _dose_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, list(sources.DOSE_COLUMNS))
        w.writeheader()
        w.writerows(rows)
    return path


def _count(rt, model, ids) -> int:
    with rt.sessions() as s:
        return s.execute(select(func.count()).select_from(model).where(model.id.in_(list(ids)))).scalar_one()


def test_csv_import_end_to_end(world, runtime, tmp_path):
    good = [_row() for _ in range(3)]
    bad_sex = _row(sex="feminine")
    bad_bform = _row(bform="12-34")
    dup_bform = _row(bform=good[0]["bform"])
    f = _patient_csv(tmp_path / "patients.csv", good[:2] + [bad_sex] + good[2:] + [bad_bform, dup_bform])
    res = importer.run(runtime, f, username=world.users["clinic_a"], chunk_size=2)
    assert (res.imported, res.rejected, res.rows_done, res.file_format) == (3, 3, 6, "csv-patients")

    for row in good:  # readable through the API, by the facility's own clinic, decrypted
        r = world.client.get(f"/api/v1/patients/{row['id']}", headers=world.h("clinic_a"))
        assert r.status_code == 200
        body = r.json()
        assert (body["given_name"], body["bform"], body["guardian"]["cnic"], body["address"]) == \
               (row["given_name"], row["bform"], row["guardian_cnic"], row["address"])
        assert body["home_facility"] == world.facilities["a"] and body["district"] == "PK-PB-LAH"
        assert body["custodian"] == "PK-PB"
    # found by exact identifier through the blind index
    r = world.client.post("/api/v1/patients/search", json={"system": "bform", "value": good[1]["bform"]}, headers=world.h("clinic_c"))
    assert [m["id"] for m in r.json()] == [good[1]["id"]]
    # another province's clinic cannot read the imported record by id
    assert world.client.get(f"/api/v1/patients/{good[0]['id']}", headers=world.h("clinic_c")).status_code == 404

    # audit: one event per chunk with patients, by the importing account, every patient a subject
    events = [e for e in audit_events(runtime, action="patient.import") if e.detail.get("run") == str(res.run_id)]
    assert len(events) == 2 and {e.actor_username for e in events} == {world.users["clinic_a"]}
    with runtime.sessions() as s:
        subjects = set(s.execute(select(AuditEventSubjectRow.patient_id)
                                 .where(AuditEventSubjectRow.event_id.in_([e.id for e in events]))).scalars())
    assert subjects == {uuid.UUID(r["id"]) for r in good}

    # error report: row, field, reason code; none of the submitted values
    report = tmp_path / "errors.csv"
    importer.write_error_report(runtime, res.run_id, report)
    lines = list(csv.DictReader(open(report)))
    assert {(line["row"], line["field"], line["reason"]) for line in lines} == {
        ("3", "sex", "value_error"), ("5", "bform", "value_error"), ("6", "bform", "duplicate_identifier")}
    content = report.read_text()
    for row in (bad_sex, bad_bform, dup_bform):
        for key in ("given_name", "family_name", "guardian_name", "phone", "address", "bform", "guardian_cnic"):
            assert row[key] not in content, key
    assert "feminine" not in content

    # stored encrypted: no plaintext in the rows as the database holds them
    with runtime.engine.connect() as c:
        if is_postgres(runtime):
            raw = " ".join(c.execute(text("SELECT CAST(p AS text) FROM patients p WHERE id = ANY(:ids)"),
                                     {"ids": [uuid.UUID(r["id"]) for r in good]}).scalars())
        else:
            raw = Path(runtime.settings.database_url.removeprefix("sqlite:///")).read_bytes().decode("latin-1")
    for row in good:
        for key in ("given_name", "family_name", "guardian_name", "address"):
            assert row[key] not in raw, key
        assert row["bform"].replace("-", "") not in raw and row["bform"] not in raw


def test_dose_import_with_validation(world, runtime, tmp_path):
    child = world.register("clinic_a", birth_date="2026-06-01")
    visiting = world.register("clinic_c")
    rows = [
        {"id": "", "patient_id": child["id"], "vaccine": "BCG", "dose_number": "1", "date_given": "2026-06-02", "lot_number": "B1"},
        {"id": "", "patient_id": child["id"], "vaccine": "penta", "dose_number": "1", "date_given": "2026-07-13", "lot_number": ""},
        {"id": "", "patient_id": child["id"], "vaccine": "BCG", "dose_number": "1", "date_given": "2026-06-03", "lot_number": ""},
        {"id": "", "patient_id": child["id"], "vaccine": "PCV", "dose_number": "9", "date_given": "2026-07-13", "lot_number": ""},
        {"id": "", "patient_id": child["id"], "vaccine": "OPV", "dose_number": "0", "date_given": "2026-05-01", "lot_number": ""},
        {"id": "", "patient_id": str(uuid.uuid4()), "vaccine": "BCG", "dose_number": "1", "date_given": "2026-06-02", "lot_number": ""},
        {"id": "", "patient_id": "not-a-uuid", "vaccine": "XYZ", "dose_number": "1", "date_given": "2026-06-02", "lot_number": ""},
        {"id": "", "patient_id": visiting["id"], "vaccine": "BCG", "dose_number": "1", "date_given": "2026-06-02", "lot_number": ""},
        {"id": "", "patient_id": child["id"], "vaccine": "OPV", "dose_number": "1", "date_given": "2099-01-01", "lot_number": ""},
    ]
    f = _dose_csv(tmp_path / "doses.csv", rows)
    with runtime.engine.connect() as c:
        queued_before = c.execute(select(func.count()).select_from(DirtyPatient).where(
            DirtyPatient.patient_id == uuid.UUID(child["id"]))).scalar_one()
    res = importer.run(runtime, f, username=world.users["clinic_a"], chunk_size=100)
    assert (res.imported, res.rejected) == (3, 6)
    with runtime.engine.connect() as c:  # the coverage aggregates will fold the imported doses in
        queued = c.execute(select(func.count()).select_from(DirtyPatient).where(
            DirtyPatient.patient_id == uuid.UUID(child["id"]))).scalar_one()
    assert queued > queued_before
    r = world.client.get(f"/api/v1/patients/{child['id']}/immunizations", headers=world.h("clinic_a"))
    assert sorted((d["vaccine"], d["dose_number"], d["facility"]) for d in r.json()) == \
           [("BCG", 1, world.facilities["a"]), ("PENTA", 1, world.facilities["a"])]
    report = tmp_path / "e.csv"
    importer.write_error_report(runtime, res.run_id, report)
    got = {(line["row"], line["field"], line["reason"]) for line in csv.DictReader(open(report))}
    assert ("3", "dose_number", "duplicate_dose") in got and ("4", "dose_number", "out_of_range") in got
    assert ("5", "date_given", "before_birth") in got and ("6", "patient_id", "unknown_patient") in got
    assert ("7", "patient_id", "uuid_parsing") in got and ("9", "date_given", "in_future") in got
    event = [e for e in audit_events(runtime, action="immunization.import") if e.detail.get("run") == str(res.run_id)]
    assert len(event) == 1 and event[0].outside_capture_scope  # the visiting child's dose
    assert event[0].detail["count"] == 3 and "BCG" not in str(event[0].detail)


class Interrupted(Exception):
    pass


def test_resume_after_interruption_never_duplicates(world, runtime, tmp_path):
    rows = [_row(id="") for _ in range(10)]  # no client ids: ids derive from the file and the row
    f = _patient_csv(tmp_path / "resume.csv", rows)

    def kill_after_second_chunk(p):
        if p.chunk == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        importer.run(runtime, f, username=world.users["clinic_a"], chunk_size=3, on_chunk=kill_after_second_chunk)
    sha = sources.file_sha256(f)
    ids = [sources.derived_id(sha, n) for n in range(1, 11)]
    assert _count(runtime, Patient, ids) == 6
    with runtime.sessions() as s:
        run = s.execute(select(ImportRun).where(ImportRun.file_sha256 == sha)).scalar_one()
        assert (run.rows_done, run.status) == (6, "running")

    # a second import of the same file that read the run before the first one committed stops
    _, actor, _ = importer.start(runtime, f, None, world.users["clinic_a"], None, 3)
    stale = list(sources.items(f, sha, "csv-patients"))[3:6]
    with pytest.raises(Conflict):
        importer._commit_chunk(runtime, actor, run.id, stale, 2, 0, 0)
    assert _count(runtime, Patient, ids) == 6

    again = importer.run(runtime, f, username=world.users["clinic_a"], chunk_size=3)
    assert (again.run_id, again.resumed_from, again.imported, again.rows_done) == (run.id, 6, 10, 10)
    assert _count(runtime, Patient, ids) == 10
    third = importer.run(runtime, f, username=world.users["clinic_a"], chunk_size=3)
    assert (third.resumed_from, third.imported) == (10, 10) and _count(runtime, Patient, ids) == 10
    # the same rows in another file: client-less rows get other ids, but identifiers dedupe them
    g = _patient_csv(tmp_path / "copy.csv", rows + [_row(id="")])
    copy = importer.run(runtime, g, username=world.users["clinic_a"], chunk_size=50)
    assert (copy.imported, copy.rejected) == (1, 10)


def test_only_a_facility_account_may_import_and_the_refusal_is_audited(world, runtime, tmp_path):
    f = _patient_csv(tmp_path / "p.csv", [_row()])
    with pytest.raises(Forbidden):
        importer.run(runtime, f, username=world.users["official_province"])
    denied = [e for e in audit_events(runtime, action="bulk.import") if e.actor_username == world.users["official_province"]]
    assert denied and denied[-1].outcome == "denied"
    with pytest.raises(Forbidden):
        importer.run(runtime, f, username=world.users["clinic_a"], facility=world.facilities["b"])
    assert _count(runtime, Patient, [uuid.UUID(_r) for _r in [list(csv.DictReader(open(f)))[0]["id"]]]) == 0


def test_cli_import_prints_counts_and_writes_the_report(world, runtime, tmp_path, monkeypatch):
    from cli.main import app as cli_app
    from registry.settings import get_settings

    rows = [_row(), _row(sex="x")]
    f = _patient_csv(tmp_path / "cli.csv", rows)
    for k, v in {"NHR_DATABASE_URL": runtime.settings.database_url, "NHR_KEY_DIR": str(runtime.settings.key_dir),
                 "NHR_ENV": "test"}.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli_app, ["import", str(f), "--user", world.users["clinic_a"]])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output[-500:]
    assert "1 imported" in result.output and "1 rows rejected" in result.output
    for key in ("given_name", "family_name", "bform"):
        assert rows[1][key] not in result.output
    report = f.with_name("cli.csv.errors.csv")
    assert [line["reason"] for line in csv.DictReader(open(report))] == ["value_error"]
    assert _count(runtime, Immunization, []) == 0
