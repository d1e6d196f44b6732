"""Issue 12, items 1 and 2: reported doses are facts with provenance, and every vaccine code a
partner sends is recorded and counted for what it protects against. Values are compared, never
printed."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

import pytest
from sqlalchemy import text

from conftest import audit_events
from registry.clock import local_today
from registry.fhir import codes
from registry.fhir.mapping import immunization_from_fhir, validate
from registry.immunizations import vocabulary
from registry.schedules import engine

URL = "/api/v1/patients/{}/immunizations"
CVX = codes.CVX


def _post(w, pid, who="clinic_a", **body):
    return w.client.post(URL.format(pid), json=body, headers=w.h(who))


def _doses(w, pid):
    r = w.client.get(URL.format(pid), headers=w.h("clinic_a"))
    assert r.status_code == 200
    return r.json()


def _child(w, years: int = 3):
    birth = local_today() - timedelta(days=365 * years)
    return w.register(birth_date=birth.isoformat())["id"], birth


# ------------------------------------------------------------------ the vocabulary and its rule

@pytest.mark.parametrize("code,counts", [
    ("146", ("PENTA", "IPV")), ("132", ("PENTA", "IPV")), ("03", ("MR",)), ("94", ("MR",)), ("20", ()),
    ("106", ()), ("50", ()), ("110", ("HEPB", "IPV")), ("120", ("IPV",)), ("133", ("PCV",)), ("152", ("PCV",)),
    ("116", ("ROTA",)), ("119", ("ROTA",)), ("122", ("ROTA",)), ("10", ("IPV",)), ("89", ()), ("08", ("HEPB",)),
    ("45", ("HEPB",)), ("48", ()), ("43", ("HEPB",)), ("62", ()), ("165", ()), ("21", ()), ("83", ()), ("88", ()),
    ("140", ()), ("141", ()), ("208", ()), ("213", ()), ("115", ("TD",)), ("113", ("TD",)), ("19", ("BCG",)),
    ("190", ("TCV",)), ("02", ("OPV",)), ("33", ())])
def test_every_listed_cvx_code_counts_for_what_it_protects_against(code, counts):
    entry, _ = vocabulary.load().lookup(CVX, code)
    assert entry.counts_for == counts
    assert entry.vaccine == (counts[0] if counts else entry.group)


def test_other_systems_and_epi_names():
    voc = vocabulary.load()
    assert voc.lookup("http://www.whocc.no/atc", "J07CA09")[0].counts_for == ("PENTA", "IPV")
    assert voc.lookup(codes.SNOMED, "871831003")[0].counts_for == ("MR",)
    assert voc.lookup(codes.ICD11, "XM68M6")[0].group == "COVID19"
    entry, number = voc.lookup(vocabulary.EPI_NAME_SYSTEM, "Penta-3")
    assert (entry.counts_for, number) == (("PENTA",), 3)
    assert voc.lookup(CVX, "99999") is None


def test_a_malformed_vocabulary_is_refused():
    doc = {"schema_version": 1, "code": "x", "version": "1", "epi": {"BCG": ["tuberculosis"]},
           "codes": [{"system": "s", "code": "1", "antigens": ["influenza"]}]}
    with pytest.raises(vocabulary.VocabularyError):
        vocabulary.parse(doc, ["BCG"])  # counts for nothing and names no group
    with pytest.raises(vocabulary.VocabularyError):
        vocabulary.parse({**doc, "codes": [{"system": "s", "code": "1", "antigens": ["tuberculosis"], "group": "X1"}]},
                         ["BCG"])  # counts for BCG and names a group
    with pytest.raises(vocabulary.VocabularyError):
        vocabulary.parse(doc, ["BCG", "OPV"])  # `epi` must list every vaccine NHR records


def test_the_engine_places_a_dose_with_no_number():
    doc = {"schema_version": 1, "code": "t", "version": "1", "jurisdiction": "PK", "effective_from": "2026-01-01",
           "series": [{"id": "OPV-birth", "vaccine": "OPV", "doses": [{"dose": 0, "min_age": "0d", "max_age": "14d"}]},
                      {"id": "OPV", "vaccine": "OPV", "doses": [{"dose": 1, "min_age": "6w"},
                                                                {"dose": 2, "min_age": "10w", "min_interval": "4w"}]}]}
    s, birth = engine.parse(doc), date(2025, 1, 1)
    got = engine.evaluate(s, birth, None, [engine.Dose("OPV", None, birth), engine.Dose("OPV", None, date(2025, 4, 20)),
                                           engine.Dose("OPV", None, date(2025, 2, 15))], date(2026, 1, 1))
    assert [(r.series, r.counted_as) for r in got.recorded] == [("OPV-birth", 0), ("OPV", 1), ("OPV", 2)]
    twice = engine.evaluate(s, birth, None, [engine.Dose("OPV", 1, date(2025, 2, 15)), engine.Dose("OPV", None, date(2025, 2, 15))],
                            date(2026, 1, 1))  # numbered and unnumbered doses on one day sort without error
    assert sorted(r.status for r in twice.recorded) == ["invalid", "valid"]


# ------------------------------------------------------------------ reported doses, native API

def test_a_reported_dose_is_never_refused_for_the_schedule_and_keeps_its_provenance(world, runtime):
    pid, birth = _child(world)
    body = {"provenance": "reported", "report_origin": "home_record", "vaccine": "PENTA", "dose_number": 1,
            "date_given": (birth + timedelta(days=10)).isoformat(),  # too early for Penta-1: refused if given here
            "performer_text": "LHW Nasreen Akhtar", "location_text": "Basic Health Unit Chak 42", "country": "PK"}
    r = _post(world, pid, **{k: v for k, v in body.items() if k not in ("provenance", "report_origin", "performer_text",
                                                                      "location_text", "country")})
    assert r.status_code == 422 and r.json()["reason"] == engine.TOO_EARLY
    r = _post(world, pid, **body)
    assert r.status_code == 201, r.json()
    view = r.json()
    assert (view["provenance"], view["primary_source"], view["performer_id"], view["validity"], view["validity_reason"]) == \
        ("reported", False, None, "invalid", engine.TOO_EARLY)
    assert (view["performer_text"], view["location_text"], view["country"], view["override_rule"]) == \
        (body["performer_text"], body["location_text"], "PK", None)
    assert view["recorder_id"] and view["facility"]  # the recorder, not the performer
    ev = audit_events(runtime, request_id=r.headers["X-Request-ID"])
    assert [(e.action, e.outcome) for e in ev] == [("immunization.create", "success")]
    # the same dose number again, now at a valid age: never refused, and judged as the engine judges the
    # series (the first, too early, does not count, so this one fills the first slot: valid, issue 18)
    again = _post(world, pid, **{**body, "date_given": (birth + timedelta(days=100)).isoformat()})
    assert again.status_code == 201 and again.json()["validity"] == "valid"
    listed = {d["id"]: d["validity"] for d in world.client.get(f"/api/v1/patients/{pid}/immunizations",
                                                                 headers=world.h("clinic_a")).json()}
    assert listed[again.json()["id"]] == "valid" and listed[view["id"]] == "invalid"


@pytest.mark.parametrize("change,field", [
    ({"date_given": "2001-01-01"}, "date_given"),               # before birth
    ({"date_given": "2999-01-01"}, "date_given"),               # in the future
    ({"vaccine": None, "code": {"system": "urn:x", "code": "Q1"}}, "code"),  # unknown code, no text
])
def test_only_impossible_facts_are_refused(world, runtime, change, field):
    pid, birth = _child(world)
    body = {"provenance": "reported", "vaccine": "BCG", "date_given": (birth + timedelta(days=3)).isoformat(), **change}
    body = {k: v for k, v in body.items() if v is not None}
    r = _post(world, pid, **body)
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert [e["field"] for e in problem["errors"]] == [field]
    assert "Q1" not in r.text and "2999" not in r.text  # never echoes the submitted value
    assert _doses(world, pid) == []


def test_reported_fields_are_for_reported_doses(world):
    pid, birth = _child(world)
    r = _post(world, pid, vaccine="BCG", dose_number=1, date_given=birth.isoformat(), performer_text="someone")
    assert r.status_code == 422


def test_an_approximate_date_and_an_inferred_dose_number(world):
    pid, birth = _child(world, years=6)
    year = birth.year + 1
    r = _post(world, pid, provenance="reported", report_origin="recall", vaccine="MR", occurrence_text=f"about {year}")
    assert r.status_code == 201, r.json()
    view = r.json()
    assert (view["occurrence_text"], view["date_given"], view["dose_number"], view["dose_number_inferred"]) == \
        (f"about {year}", date(year, 7, 1).isoformat(), 1, True)
    res = validate(world.client.get(f"/fhir/R4/Immunization/{view['id']}", headers=world.h("clinic_a")).json())
    assert res["occurrenceString"] == f"about {year}" and "occurrenceDateTime" not in res
    assert res["primarySource"] is False and "performer" not in res
    assert res["reportOrigin"]["coding"][0] == {"system": codes.REPORT_ORIGIN_NHR, "code": "recall"}
    assert res["protocolApplied"][0]["extension"] == [{"url": codes.EXT_DOSE_NUMBER_INFERRED, "valueBoolean": True}]
    _, back = immunization_from_fhir(res)
    assert (back.provenance, back.occurrence_text, back.report_origin) == ("reported", f"about {year}", "recall")


def test_doses_reported_out_of_order_are_numbered_by_date(world):
    pid, birth = _child(world)
    days = (120, 42, 80)
    for d in days:  # the third dose first
        r = _post(world, pid, provenance="reported", code={"system": CVX, "code": "133"},
                  date_given=(birth + timedelta(days=d)).isoformat())
        assert r.status_code == 201, r.json()
    got = sorted((v["date_given"], v["dose_number"], v["validity"]) for v in _doses(world, pid))
    assert [(n, v) for _, n, v in got] == [(1, "valid"), (2, "valid"), (3, "valid")]


# ------------------------------------------------------------------ every vaccine code

def test_a_hexavalent_dose_counts_for_penta_and_ipv_and_is_amended_as_one(world, runtime):
    pid, birth = _child(world)
    r = _post(world, pid, provenance="reported", report_origin="abroad", country="AE",
              code={"system": CVX, "code": "146"}, date_given=(birth + timedelta(weeks=15)).isoformat())
    assert r.status_code == 201, r.json()
    view = r.json()
    assert (view["vaccine"], view["counts_for"], view["code"]["code"]) == ("PENTA", ["PENTA", "IPV"], "146")
    listed = _doses(world, pid)
    assert [d["id"] for d in listed] == [view["id"]]  # the IPV component is not a dose of its own in lists
    schedule = world.client.get(f"/api/v1/patients/{pid}/schedule", headers=world.h("clinic_a")).json()
    given = {(d["vaccine"], d["status"]) for d in schedule["doses"]}
    assert {("PENTA", "valid"), ("IPV", "valid")} <= given  # the engine sees both (IPV from 14 weeks)
    fhir = world.client.get(f"/fhir/R4/Immunization?patient=Patient/{pid}", headers=world.h("clinic_a")).json()
    assert [e["resource"]["id"] for e in fhir.get("entry", [])] == [view["id"]]
    r = world.client.post(f"/api/v1/immunizations/{view['id']}/void", json={"reason": "wrong child"},
                          headers=world.h("clinic_a", **{"If-Match": f'"{view["version"]}"'}))
    assert r.status_code == 200, r.json()
    with runtime.sessions() as s:
        statuses = {row[0] for row in s.execute(text("SELECT status FROM immunizations WHERE patient_id = :p"),
                                                 {"p": uuid.UUID(pid) if s.get_bind().dialect.name == "postgresql" else uuid.UUID(pid).hex})}
    assert statuses == {"entered-in-error"}  # the component is voided with its main row


def test_vaccines_outside_the_schedule_and_unknown_codes_are_recorded(world, runtime):
    pid, birth = _child(world, years=8)
    when = (birth + timedelta(days=400)).isoformat()
    flu = _post(world, pid, provenance="reported", code={"system": CVX, "code": "140"}, date_given=when)
    dtap = _post(world, pid, provenance="reported", code={"system": CVX, "code": "20"}, date_given=when)
    odd = _post(world, pid, provenance="reported", code={"system": "urn:oid:1.2.3", "code": "ZZ9", "text": "Local vaccine"},
                date_given=when)
    assert [x.status_code for x in (flu, dtap, odd)] == [201, 201, 201]
    assert (flu.json()["vaccine"], flu.json()["validity"], flu.json()["counts_for"]) == ("INFLUENZA", "not_in_schedule", [])
    assert (dtap.json()["vaccine"], dtap.json()["counts_for"]) == ("DTP", [])
    assert (odd.json()["vaccine"], odd.json()["code"]) == ("UNKNOWN", {"system": "urn:oid:1.2.3", "code": "ZZ9",
                                                                       "text": "Local vaccine"})
    with runtime.sessions() as s:  # what the data-quality report counts: no decryption needed
        n = s.execute(text("SELECT count(*) FROM immunizations WHERE vaccine = 'UNKNOWN' AND code = 'ZZ9'")).scalar()
    assert n == 1


def test_free_text_provenance_is_encrypted_and_bound_to_its_row(world, runtime):
    pid, birth = _child(world)
    secret = f"Dr Parveen {uuid.uuid4().hex[:8]}"
    r = _post(world, pid, provenance="reported", vaccine="BCG", date_given=birth.isoformat(), performer_text=secret,
              location_text=secret, occurrence_text=None)
    assert r.status_code == 201
    with runtime.sessions() as s:
        row = s.execute(text("SELECT performer_text_ct, location_text_ct FROM immunizations WHERE performer_text_ct IS NOT NULL"
                             " ORDER BY recorded_at DESC")).first()
    assert row[0] and secret.encode() not in bytes(row[0]) and secret.encode() not in bytes(row[1])
    cipher = runtime.cipher
    with pytest.raises(Exception):  # a ciphertext moved to another column does not decrypt
        cipher.decrypt(bytes(row[0]), table="immunizations", column="location_text_ct", row_id=uuid.UUID(r.json()["id"]),
                       custodian="PK-PB")


def test_citizen_view_and_certificate_show_reported_doses_as_reported(world):
    birth = local_today() - timedelta(days=365)
    child = world.register(birth_date=birth.isoformat())
    pid = child["id"]
    here = _post(world, pid, vaccine="OPV", dose_number=0, date_given=birth.isoformat())
    assert here.status_code == 201, here.json()
    later = _post(world, pid, provenance="reported", report_origin="other_system", vaccine="OPV",
                  date_given=(birth + timedelta(weeks=7)).isoformat())
    assert later.status_code == 201
    html = world.client.get(f"/api/v1/patients/{pid}/certificate", params={"format": "html"}, headers=world.h("clinic_a"))
    assert html.status_code == 200 and html.text.count(">reported<") == 1 and html.text.count(">administered<") == 1
    # the HC1 certifies the latest polio dose administered here (OPV-0), never the later reported OPV-1
    hc1 = world.client.get(f"/api/v1/patients/{pid}/certificate", headers=world.h("clinic_a")).json()["hc1"]
    entry, = world.client.post("/api/v1/certificates/verify", json={"hc1": hc1}).json()["certificate"]["v"]
    assert entry["dt"] == birth.isoformat()
    login = world.client.post("/api/v1/citizen/token", json={"health_id": child["health_id"],
                                                              "access_code": child["access_code"]})
    h = {"Authorization": f"Bearer {login.json()['access_token']}"}
    citizen = world.client.get("/api/v1/citizen/me/immunizations", headers=h).json()
    assert sorted((d["dose_number"], d["reported"]) for d in citizen) == [(0, False), (1, True)]


# ------------------------------------------------------------------ sync batch and Bundles use the same path

def test_a_bundle_of_reported_history(world):
    pid, birth = _child(world)
    entries = []
    for i, (code, days) in enumerate((("146", 50), ("146", 80), ("03", 300), ("140", 200))):
        entries.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "request": {"method": "POST", "url": "Immunization"},
                        "resource": {"resourceType": "Immunization", "status": "completed",
                                     "vaccineCode": {"coding": [{"system": CVX, "code": code}]},
                                     "patient": {"reference": f"Patient/{pid}"}, "primarySource": False,
                                     "reportOrigin": {"coding": [{"system": codes.REPORT_ORIGIN_HL7, "code": "record"}]},
                                     "occurrenceDateTime": (birth + timedelta(days=days)).isoformat()}})
    r = world.client.post("/fhir/R4", json={"resourceType": "Bundle", "type": "transaction", "entry": entries},
                          headers=world.h("clinic_a", **{"Content-Type": "application/fhir+json"}))
    assert r.status_code == 200, r.json()
    views = _doses(world, pid)
    assert sorted((v["vaccine"], v["dose_number"]) for v in views) == [("INFLUENZA", 1), ("MR", 1), ("PENTA", 1), ("PENTA", 2)]
    assert all(v["provenance"] == "reported" and v["report_origin"] == "home_record" for v in views)
    schedule = world.client.get(f"/api/v1/patients/{pid}/schedule", headers=world.h("clinic_a")).json()
    ipv = [d for d in schedule["doses"] if d["vaccine"] == "IPV"]
    assert len(ipv) == 2  # the hexavalent doses count for IPV too


def test_batch_sync_takes_reported_doses(world):
    pid, birth = _child(world)
    items = [{"op": "dose.record", "patient_id": pid,
              "data": {"id": str(uuid.uuid4()), "provenance": "reported", "report_origin": "facility_register",
                       "code": {"system": vocabulary.EPI_NAME_SYSTEM, "code": "Penta-2"},
                       "date_given": (birth + timedelta(days=20)).isoformat()}}]
    r = world.client.post("/api/v1/sync/batch", json={"items": items}, headers=world.h("clinic_a"))
    assert r.status_code in (200, 207), r.json()
    view, = _doses(world, pid)
    assert (view["vaccine"], view["dose_number"], view["dose_number_inferred"], view["validity"]) == \
        ("PENTA", 2, False, "invalid")


def test_bulk_csv_takes_codes_and_provenance(world, runtime, tmp_path):
    from registry.bulk import importer

    pid, birth = _child(world)
    f = tmp_path / "history.csv"
    f.write_text("patient_id,code_system,code,code_text,date_given,occurrence_text,provenance,report_origin,country\n"
                 f"{pid},{CVX},146,,{(birth + timedelta(weeks=15)).isoformat()},,reported,abroad,AE\n"
                 f"{pid},urn:x,LOCAL-7,Local typhoid,,about {birth.year + 1},reported,recall,\n"
                 f"{pid},urn:x,LOCAL-8,,{birth.isoformat()},,reported,recall,\n", encoding="utf-8")
    res = importer.run(runtime, f, username=world.users["clinic_a"])
    assert (res.imported, res.rejected) == (2, 1)  # the unknown code with no text
    views = sorted((v["vaccine"], v["counts_for"], v["report_origin"], v["country"]) for v in _doses(world, pid))
    assert views == [("PENTA", ["PENTA", "IPV"], "abroad", "AE"), ("UNKNOWN", [], "recall", None)]


def test_correcting_a_reported_combination_dose_keeps_provenance_and_components(world, runtime):
    pid, birth = _child(world)
    secret = f"Sister Rukhsana {uuid.uuid4().hex[:6]}"
    r = _post(world, pid, provenance="reported", report_origin="home_record", performer_text=secret,
              code={"system": CVX, "code": "146"}, date_given=(birth + timedelta(weeks=15)).isoformat())
    assert r.status_code == 201
    dose = r.json()
    fixed = world.client.post(f"/api/v1/immunizations/{dose['id']}/correct",
                              json={"date_given": (birth + timedelta(weeks=16)).isoformat(), "reason": "card misread"},
                              headers=world.h("clinic_a", **{"If-Match": f'"{dose["version"]}"'}))
    assert fixed.status_code == 201, fixed.json()
    new = fixed.json()
    assert (new["provenance"], new["report_origin"], new["performer_text"], new["counts_for"], new["code"]["code"]) == \
        ("reported", "home_record", secret, ["PENTA", "IPV"], "146")
    listed = [d for d in _doses(world, pid) if d["status"] == "completed"]
    assert [d["id"] for d in listed] == [new["id"]]
    schedule = world.client.get(f"/api/v1/patients/{pid}/schedule", headers=world.h("clinic_a")).json()
    assert sorted(d["vaccine"] for d in schedule["doses"]) == ["IPV", "PENTA"]  # the old component is superseded


def test_fhir_search_by_a_product_code(world):
    pid, birth = _child(world)
    assert _post(world, pid, provenance="reported", code={"system": CVX, "code": "133"},
                 date_given=(birth + timedelta(weeks=7)).isoformat()).status_code == 201
    r = world.client.get("/fhir/R4/Immunization", params={"patient": f"Patient/{pid}", "vaccine-code": f"{CVX}|133"},
                         headers=world.h("clinic_a"))
    assert r.status_code == 200 and len(r.json().get("entry", [])) == 1
