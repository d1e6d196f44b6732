"""The duplicate check where records enter (API, FHIR, sync), Patient/$match, batch
deduplication, and where matching runs: no value in candidate or model rows, nothing echoed."""

import json
import secrets
import uuid
from datetime import UTC, datetime

from sqlalchemy import select, text

from conftest import audit_events, unique_nadra
from registry.linkage.match_models import DedupeRun, LinkModel
from registry.linkage.models import LinkCandidate


def _child(**over) -> dict:
    tag = secrets.token_hex(3)
    body = {"given_name": "Muhammad", "family_name": f"Qizil{tag}", "sex": "male", "birth_date": "2026-03-07",
            "guardian": {"name": f"Mehrun{tag} Bibi", "relationship": "mother", "cnic": unique_nadra()},
            "phone": f"0333-{secrets.randbelow(10**7):07d}", "address": f"House {tag}, Gali Qasaban"}
    body.update(over)
    return body


def _variant(body: dict) -> dict:
    """The same child written again: Mohammad, day and month swapped, no phone, another address."""
    return {**body, "given_name": "Mohammad", "birth_date": "2026-07-03", "phone": None, "address": "elsewhere"}


def _post(world, who, body, **headers):
    return world.client.post("/api/v1/patients", json=body, headers=world.h(who, **headers))


def _candidates(runtime, *ids):
    t = LinkCandidate.__table__
    with runtime.sessions() as s:
        return list(s.execute(select(t).where(t.c.left_id.in_(ids) | t.c.right_id.in_(ids))))


def test_likely_duplicate_answers_409_with_identity_confirmation_only(world, runtime):
    first = _post(world, "clinic_a", _child())
    assert first.status_code == 201
    body = _variant({**_child(), "family_name": first.json()["family_name"],
                     "guardian": {"name": first.json()["guardian"]["name"], "relationship": "mother",
                                  "cnic": first.json()["guardian"]["cnic"]}})
    before = len(audit_events(runtime, action="patient.create", outcome="conflict"))
    r = _post(world, "clinic_b", body)  # another district: found through search scope
    assert r.status_code == 409
    assert r.headers["content-type"].startswith("application/problem+json")
    p = r.json()
    assert p["code"] == "likely_duplicate" and p["errors"][0]["field"] == "confirm_not_duplicate" and "confirm" in p
    [c] = p["candidates"]
    assert c["id"] == first.json()["id"] and c["access"] == "search"
    assert c["match_grade"] in ("certain", "probable") and "reasons" in c
    for withheld in ("phone", "address", "bform", "cnic", "custodian"):
        assert withheld not in c
    assert "cnic" not in (c.get("guardian") or {})
    raw = r.text
    assert body["address"] not in raw and "Mohammad" not in raw  # nothing submitted is echoed
    events = audit_events(runtime, action="patient.create", outcome="conflict")
    assert len(events) == before + 1 and events[-1].detail["reason"] == "likely_duplicate"
    with runtime.sessions() as s:  # nothing half-written
        assert s.execute(text("SELECT count(*) FROM link_keys lk JOIN patients p ON p.id = lk.patient_id "
                              "WHERE p.created_by = (SELECT id FROM users WHERE username = 'clinic_b') "
                              "AND p.birth_date = '2026-07-03'")).scalar_one() == 0


def test_confirmed_registration_is_audited_and_queued_for_review(world, runtime):
    first = _post(world, "clinic_a", _child()).json()
    body = _variant({**_child(), "family_name": first["family_name"],
                     "guardian": {"name": first["guardian"]["name"], "relationship": "mother", "cnic": first["guardian"]["cnic"]}})
    assert _post(world, "clinic_a", body).status_code == 409
    r = _post(world, "clinic_a", {**body, "confirm_not_duplicate": True})
    assert r.status_code == 201
    new_id = r.json()["id"]
    [cand] = _candidates(runtime, uuid.UUID(new_id))
    assert {str(cand.left_id), str(cand.right_id)} == {new_id, first["id"]}
    assert cand.source == "registration" and cand.status == "open" and all(isinstance(v, int) for v in cand.levels.values())
    [event] = [e for e in audit_events(runtime, action="patient.create", outcome="success") if e.resource_id == new_id]
    assert event.detail["confirmed_not_duplicate"] is True and event.detail["link_candidates"] == 1


def test_possible_match_registers_and_goes_to_the_queue(world, runtime):
    first = _post(world, "clinic_a", _child()).json()
    # same given name, birth date, family name and facility; no phone or guardian CNIC to compare,
    # another guardian's name: possible, not likely
    body = {**_child(), "family_name": first["family_name"], "birth_date": first["birth_date"], "phone": None,
            "guardian": {"name": "Zubaida Begum", "relationship": "mother"}}
    r = _post(world, "clinic_a", body)
    assert r.status_code == 201, r.json()
    cands = _candidates(runtime, uuid.UUID(r.json()["id"]))
    assert [c.grade for c in cands] == ["possible"]


def test_exact_identifier_conflict_is_unchanged(world):
    bform = unique_nadra()
    assert _post(world, "clinic_a", _child(bform=bform)).status_code == 201
    r = _post(world, "clinic_a", _child(bform=bform, given_name="Zarnigar"))
    assert r.status_code == 409 and r.json()["errors"][0]["field"] == "bform" and "candidates" not in r.json()


def test_fhir_create_of_a_likely_duplicate_is_409_until_confirmed(world):
    first = _post(world, "clinic_a", _child()).json()
    patient = {"resourceType": "Patient", "name": [{"given": ["Mohammad"], "family": first["family_name"]}],
               "gender": "male", "birthDate": "2026-07-03",
               "contact": [{"relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0131", "code": "N"}]}],
                            "name": {"text": first["guardian"]["name"]}}]}
    h = {**world.h("clinic_a"), "Content-Type": "application/fhir+json"}
    r = world.client.post("/fhir/R4/Patient", json=patient, headers=h)
    assert r.status_code == 409 and r.json()["resourceType"] == "OperationOutcome"
    r = world.client.post("/fhir/R4/Patient", json=patient, headers={**h, "X-Confirm-Not-Duplicate": "true"})
    assert r.status_code == 201


def test_sync_batch_reports_a_likely_duplicate_per_item(world):
    first = _post(world, "clinic_a", _child()).json()
    item = _variant({**_child(), "family_name": first["family_name"],
                     "guardian": {"name": first["guardian"]["name"], "relationship": "mother", "cnic": first["guardian"]["cnic"]}})
    item["id"] = str(uuid.uuid4())
    r = world.client.post("/api/v1/sync/batch", json={"items": [{"op": "patient.create", "data": item}]},
                          headers=world.h("clinic_a"))
    assert r.status_code == 200, r.json()
    [res] = r.json()["results"]
    assert res["result"] == "rejected" and res["reason"] == "conflict" and res["code"] == "likely_duplicate"


def test_match_operation_grades_and_scores_within_search_scope(world):
    first = _post(world, "clinic_a", _child()).json()
    patient = {"resourceType": "Patient", "name": [{"given": ["Md"], "family": first["family_name"]}], "gender": "male",
               "birthDate": "2026-03-07", "contact": [{"name": {"text": first["guardian"]["name"]}}]}
    params = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": patient},
                                                           {"name": "count", "valueInteger": 5}]}
    h = {**world.h("clinic_c"), "Content-Type": "application/fhir+json"}  # Sindh: Punjab's child is in search scope only
    r = world.client.post("/fhir/R4/Patient/$match", json=params, headers=h)
    assert r.status_code == 200, r.json()
    b = r.json()
    assert b["resourceType"] == "Bundle" and b["type"] == "searchset"
    top = b["entry"][0]
    assert top["resource"]["id"] == first["id"] and 0 < top["search"]["score"] <= 1
    assert top["search"]["extension"][0]["valueCode"] in ("certain", "probable")
    # identity confirmation only: no phone, no street address, no national ID numbers
    assert "telecom" not in top["resource"] and all("line" not in a for a in top["resource"].get("address", []))
    assert {i["system"].rsplit("/", 1)[-1] for i in top["resource"]["identifier"]} == {"health-id"}
    only = {**params, "parameter": params["parameter"] + [{"name": "onlyCertainMatches", "valueBoolean": True}]}
    r2 = world.client.post("/fhir/R4/Patient/$match", json=only, headers=h)
    assert all(e["search"]["extension"][0]["valueCode"] == "certain" for e in r2.json()["entry"])
    bad = world.client.post("/fhir/R4/Patient/$match", json={"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": patient}, {"name": "count", "valueInteger": 1000}]}, headers=h)
    assert bad.status_code == 400 and bad.json()["issue"][0]["expression"] == ["Parameters.parameter[1].valueInteger"]


def test_dedupe_is_resumable_idempotent_audited(world, runtime):
    from registry.linkage import dedupe

    first = _post(world, "clinic_a", _child()).json()
    body = _variant({**_child(), "family_name": first["family_name"],
                     "guardian": {"name": first["guardian"]["name"], "relationship": "mother", "cnic": first["guardian"]["cnic"]}})
    dup = _post(world, "clinic_a", {**body, "confirm_not_duplicate": True}).json()
    t, pair_ids = LinkCandidate.__table__, [uuid.UUID(first["id"]), uuid.UUID(dup["id"])]
    with runtime.sessions.begin() as s:  # the steward's queue forgets the pair: dedupe must find it again
        s.execute(t.delete().where(t.c.left_id.in_(pair_ids), t.c.right_id.in_(pair_ids)))  # not other tests' merged pairs
    part = dedupe.run(runtime, "PK-PB", stop_after_units=3)
    with runtime.sessions() as s:
        assert s.execute(select(DedupeRun.__table__.c.status).where(DedupeRun.__table__.c.id == part.run_id)).scalar_one() == "running"
    rest = dedupe.run(runtime, "PK-PB", workers=2)  # the rest scored in two forked processes
    assert rest.resumed and rest.run_id == part.run_id
    ids = {first["id"], dup["id"]}
    assert any({str(c.left_id), str(c.right_id)} == ids and c.source == "dedupe" for c in _candidates(runtime, uuid.UUID(dup["id"])))
    again = dedupe.run(runtime, "PK-PB")
    assert again.proposed == 0 and not again.resumed  # idempotent: nothing new
    events = audit_events(runtime, action="linkage.dedupe")
    assert [e.resource_id for e in events].count(str(part.run_id)) == 1  # one event per run, resumed or not
    assert set(events[-1].detail) == {"province", "model_version", "records", "pairs_scored", "proposed", "resumed", "trigger"}


def test_not_same_is_never_proposed_again(world, runtime):
    from registry.linkage import dedupe

    first = _post(world, "clinic_a", _child()).json()
    body = _variant({**_child(), "family_name": first["family_name"],
                     "guardian": {"name": first["guardian"]["name"], "relationship": "mother", "cnic": first["guardian"]["cnic"]}})
    dup = _post(world, "clinic_a", {**body, "confirm_not_duplicate": True}).json()
    t = LinkCandidate.__table__
    with runtime.sessions.begin() as s:
        s.execute(t.update().where(t.c.left_id.in_([uuid.UUID(dup["id"])]) | t.c.right_id.in_([uuid.UUID(dup["id"])]))
                  .values(status="not_same", version=t.c.version + 1))
    dedupe.run(runtime, "PK-PB")
    [c] = _candidates(runtime, uuid.UUID(dup["id"]))
    assert c.status == "not_same" and c.version == 2


def test_candidate_and_model_tables_hold_no_plaintext(world, runtime):
    """Matching runs in custody: after registrations, checks, a dedupe run and a stored EM
    model, no value of the test patients appears in link_candidates, link_models, link_keys or
    dedupe_runs (compared as text, case-insensitively, including Urdu script)."""
    from registry.linkage import dedupe, modelling

    made = []
    for _ in range(3):
        first = _post(world, "clinic_a", _child(given_name="عائشہ", sex="female")).json()
        made.append(first)
        body = _variant({**_child(given_name="Ayesha", sex="female"), "family_name": first["family_name"],
                         "guardian": {"name": first["guardian"]["name"], "relationship": "mother",
                                      "cnic": first["guardian"]["cnic"]}})
        made.append(_post(world, "clinic_a", {**body, "confirm_not_duplicate": True}).json())
    dedupe.run(runtime, "PK-PB")
    modelling.MIN_RECORDS = 5
    modelling.estimate_and_store(runtime, "PK-PB", activate=False)
    values = set()
    for p in made:
        values |= {p["given_name"], p["family_name"], p["guardian"]["name"], p["guardian"]["cnic"], p["phone"],
                   p["address"], p["health_id"], p["guardian"]["cnic"].replace("-", ""),
                   (p["phone"] or "").removeprefix("+92")}
        values |= set(p["family_name"].lower().split()) | {"ayesha", "mehrun"}
    with runtime.sessions() as s:
        dumped = []
        for table in ("link_candidates", "link_models", "link_keys", "dedupe_runs"):
            dumped += [json.dumps([str(v) for v in row], ensure_ascii=False).lower()
                       for row in s.execute(text(f"SELECT * FROM {table}"))]
        assert s.execute(select(LinkModel.__table__.c.method)).scalars().all()
    blob = "\n".join(dumped)
    assert blob
    leaked = [v for v in values if v and v.lower() in blob]
    assert not leaked, "plaintext in linkage tables"


def test_bulk_import_rejects_a_likely_duplicate_row_unless_confirmed(world, runtime, tmp_path):
    import csv as csvmod

    from registry.bulk import importer

    first = _post(world, "clinic_a", _child()).json()
    row = {"id": str(uuid.uuid4()), "given_name": "Mohd", "family_name": first["family_name"], "sex": "male",
           "birth_date": "2026-07-03", "guardian_name": first["guardian"]["name"], "guardian_relationship": "mother",
           "guardian_cnic": first["guardian"]["cnic"]}
    confirmed = {**row, "id": str(uuid.uuid4()), "confirm_not_duplicate": "true"}
    f = tmp_path / "children.csv"
    with open(f, "w", newline="") as out:
        w = csvmod.DictWriter(out, fieldnames=list(confirmed))
        w.writeheader()
        w.writerows([row, confirmed])
    res = importer.run(runtime, f, username=world.users["clinic_a"], fmt="csv-patients")
    assert (res.imported, res.rejected) == (1, 1)
    report = tmp_path / "errors.csv"
    importer.write_error_report(runtime, res.run_id, report)
    assert [(x["row"], x["field"], x["reason"]) for x in csvmod.DictReader(open(report))] == \
           [("1", "confirm_not_duplicate", "likely_duplicate")]
    assert any(c.source == "registration" for c in _candidates(runtime, uuid.UUID(confirmed["id"])))


def test_cross_province_linkage_compares_encodings_only(world, runtime):
    """A child registered in Sindh and again in Punjab is found from Bloom-filter encodings;
    the encodings table holds no value, and pairs within one province are not compared."""
    from registry.linkage import cross_province
    from registry.linkage.explain import explain

    first = _post(world, "clinic_c", _child()).json()  # Sindh
    body = _variant({**_child(), "family_name": first["family_name"],
                     "guardian": {"name": first["guardian"]["name"], "relationship": "mother", "cnic": unique_nadra()}})
    dup = _post(world, "clinic_a", {**body, "confirm_not_duplicate": True}).json()  # Punjab
    t, pair_ids = LinkCandidate.__table__, [uuid.UUID(first["id"]), uuid.UUID(dup["id"])]
    with runtime.sessions.begin() as s:  # forget the pair the registration queued (not other tests' merged pairs)
        s.execute(t.delete().where(t.c.left_id.in_(pair_ids), t.c.right_id.in_(pair_ids)))
    assert cross_province.encode_province(runtime, "PK-SD") >= 1
    assert cross_province.encode_province(runtime, "PK-PB") >= 1
    compared, proposed = cross_province.compare(runtime)
    assert proposed >= 1
    cands = [c for c in _candidates(runtime, uuid.UUID(dup["id"])) if c.source == "cross_province"]
    assert [{str(c.left_id), str(c.right_id)} for c in cands] == [{first["id"], dup["id"]}]
    # the engine's levels of the encoded fields only (no CNIC, phone, B-form or place), read as the engine's reasons
    assert set(cands[0].levels) == {"given_name", "family_name", "guardian_name", "birth_date", "sex"}
    assert "birth date with day and month swapped" in explain(cands[0].levels)  # _variant swaps them
    assert cands[0].model_version == cross_province.MODEL_VERSION
    with runtime.sessions() as s:
        blob = "\n".join(json.dumps([str(v) for v in row], ensure_ascii=False).lower()
                         for row in s.execute(text("SELECT patient_id, custodian, block, created_at FROM link_encodings")))
    for v in (first["family_name"], first["guardian"]["name"], "muhammad", "mohammad"):
        assert v.lower() not in blob
    assert cross_province.compare(runtime)[1] == 0  # idempotent
    assert len(audit_events(runtime, action="linkage.cross_province")) >= 2
    # an encoding of the older model (a record-level CLK, clk-1) is never compared with the new ones
    enc = cross_province.ENC
    with runtime.sessions.begin() as s:
        s.execute(t.delete().where(t.c.left_id.in_(pair_ids), t.c.right_id.in_(pair_ids)))
        s.execute(enc.update().where(enc.c.patient_id == uuid.UUID(dup["id"])).values(clk=bytes(64)))
    cross_province.compare(runtime)
    assert not [c for c in _candidates(runtime, uuid.UUID(dup["id"])) if c.source == "cross_province"]


def test_blocking_keys_follow_an_update(world, runtime):
    """A record corrected after registration (names typed again) is found by the check under
    its new names: only the name keys can find it (no shared guardian, CNIC or phone)."""
    first = _post(world, "clinic_a", _child(given_name="Xyzabc")).json()
    family = f"Rahimoon{secrets.token_hex(3)}"
    r = world.client.patch(f"/api/v1/patients/{first['id']}", json={"given_name": "Muhammad", "family_name": family},
                           headers={**world.h("clinic_a"), "If-Match": '"1"'})
    assert r.status_code == 200, r.json()
    body = {**_child(), "given_name": "Mohammad", "family_name": family, "birth_date": "2026-07-03", "phone": None,
            "guardian": {"name": f"Zubaida{secrets.token_hex(3)}", "relationship": "mother"}}
    again = _post(world, "clinic_a", body)
    assert again.status_code == 201, again.json()
    cands = _candidates(runtime, uuid.UUID(again.json()["id"]))
    assert [{str(c.left_id), str(c.right_id)} for c in cands] == [{first["id"], again.json()["id"]}]


def test_propose_many_stores_as_propose_does(world, runtime):
    """The dedupe's batched proposals (repository.propose_many): a new pair is inserted once, an
    open pair is refreshed when its score changed, a decided pair is never reopened."""
    from registry.linkage import repository as repo
    from registry.linkage.scoring import Scored

    a, b, c, d = (uuid.UUID(world.register("clinic_a")["id"]) for _ in range(4))
    sc = Scored({"given_name": 4, "birth_date": 4}, 14.0, 0.99994, "certain")
    with runtime.sessions.begin() as s:
        assert repo.propose(s, a, b, weight=7.0, probability=0.99, grade="probable", levels={"given_name": 3},
                            model_version="m1", source="dedupe") == "new"
        assert repo.propose(s, a, c, weight=7.0, probability=0.99, grade="probable", levels={"given_name": 3},
                            model_version="m1", source="dedupe") == "new"
        s.execute(LinkCandidate.__table__.update().where(LinkCandidate.__table__.c.left_id.in_([a, c]),
                                                          LinkCandidate.__table__.c.right_id.in_([a, c]))
                  .values(status="not_same"))
    with runtime.sessions.begin() as s:
        assert repo.propose_many(s, [(b, a, sc), (c, a, sc), (a, d, sc), (d, a, sc)], model_version="m1", source="dedupe") == 1
    rows = {frozenset((r.left_id, r.right_id)): r for r in _candidates(runtime, a)}
    assert len(rows) == 3
    ab, ac, ad = rows[frozenset((a, b))], rows[frozenset((a, c))], rows[frozenset((a, d))]
    assert (ab.status, ab.version, ab.grade, ab.match_weight) == ("open", 2, "certain", 14.0)
    assert (ac.status, ac.version, ac.grade) == ("not_same", 1, "probable")
    assert (ad.status, ad.version, ad.grade, ad.source) == ("open", 1, "certain", "dedupe")
    with runtime.sessions.begin() as s:  # again: nothing new, nothing changed
        assert repo.propose_many(s, [(a, b, sc), (a, d, sc)], model_version="m1", source="dedupe") == 0
    assert {r.version for r in _candidates(runtime, a) if frozenset((r.left_id, r.right_id)) != frozenset((a, c))} == {1, 2}


def test_propose_many_stores_exact_values(world, runtime):
    """The bulk insert (one JSON document a statement on PostgreSQL) stores the weight and
    probability floats exactly, the levels as given, the time given, in both orders of a pair."""
    from registry.linkage import repository as repo
    from registry.linkage.scoring import Scored

    a, b, c = (uuid.UUID(world.register("clinic_a")["id"]) for _ in range(3))
    levels = {"given_name": -1, "family_name": 5, "birth_date": 3, "place": 0}
    sc = Scored(levels, 13.300000000000002, 0.99989871234567891, "certain")
    sc2 = Scored({"given_name": 2}, -2.5e-7, 1 / 3, "possible")
    now = datetime(2026, 12, 3, 13, 5, 7, 123456, tzinfo=UTC)
    with runtime.sessions.begin() as s:
        assert repo.propose_many(s, [(b, a, sc), (a, c, sc2)], model_version="m-exact", source="dedupe", now=now) == 2
    rows = {frozenset((r.left_id, r.right_id)): r for r in _candidates(runtime, a)}
    ab, ac = rows[frozenset((a, b))], rows[frozenset((a, c))]
    assert (ab.left_id, ab.right_id) == repo.ordered(a, b)
    assert (ab.match_weight, ab.match_probability, ab.levels, ab.grade) == (sc.weight, sc.probability, levels, "certain")
    assert (ac.match_weight, ac.match_probability, ac.levels, ac.grade) == (sc2.weight, sc2.probability, {"given_name": 2},
                                                                            "possible")
    assert (ab.status, ab.version, ab.source, ab.model_version) == ("open", 1, "dedupe", "m-exact")
    assert ab.created_at == now and ab.decided_at is None and ab.note_ct is None


def _match(world, who, patient: dict, *extra) -> dict:
    params = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": patient}, *extra]}
    r = world.client.post("/fhir/R4/Patient/$match", json=params,
                          headers={**world.h(who), "Content-Type": "application/fhir+json"})
    assert r.status_code == 200, r.json()
    return {e["resource"]["id"]: (e["search"]["extension"][0]["valueCode"], e["search"]["score"]) for e in r.json()["entry"]}


def test_match_grades_a_pair_decided_not_same_as_certainly_not(world, runtime):
    """FHIR match-grade `certainly-not` ("known not to be a match"): for the record the Patient's
    id names, a candidate a steward decided is not the same child comes back graded certainly-not,
    after the matches, score 0; the record itself is not returned; onlyCertainMatches leaves it
    out, and count caps the list. Without an id (or with one out of reach) it is graded as usual."""
    first = _post(world, "clinic_a", _child()).json()
    body = _variant({**_child(), "family_name": first["family_name"],
                     "guardian": {"name": first["guardian"]["name"], "relationship": "mother", "cnic": first["guardian"]["cnic"]}})
    dup = _post(world, "clinic_a", {**body, "confirm_not_duplicate": True}).json()
    [pair] = [c for c in _candidates(runtime, uuid.UUID(first["id"])) if {str(c.left_id), str(c.right_id)} == {first["id"], dup["id"]}]
    h = world.h("steward_province")
    etag = world.client.get(f"/api/v1/linkage/candidates/{pair.id}", headers=h).headers["ETag"]
    r = world.client.post(f"/api/v1/linkage/candidates/{pair.id}/decision", json={"decision": "not_same"},
                          headers=world.h("steward_province", **{"If-Match": etag}))
    assert r.status_code == 200, r.json()

    patient = {"resourceType": "Patient", "name": [{"given": ["Muhammad"], "family": first["family_name"]}], "gender": "male",
               "birthDate": "2026-03-07", "contact": [{"name": {"text": first["guardian"]["name"]}}]}
    anonymous = _match(world, "clinic_a", patient)
    assert anonymous[first["id"]][0] in ("certain", "probable") and anonymous[dup["id"]][0] in ("certain", "probable", "possible")

    named = _match(world, "clinic_a", {**patient, "id": first["id"]})
    assert first["id"] not in named  # the record itself is not a candidate of itself
    assert named[dup["id"]] == ("certainly-not", 0)
    assert list(named)[-1] == dup["id"]  # after every real match

    assert dup["id"] not in _match(world, "clinic_a", {**patient, "id": first["id"]},
                                   {"name": "onlyCertainMatches", "valueBoolean": True})
    assert len(_match(world, "clinic_a", {**patient, "id": first["id"]}, {"name": "count", "valueInteger": 1})) == 1

    # an id of no record the caller can reach changes nothing
    out_of_reach = _match(world, "clinic_a", {**patient, "id": str(uuid.uuid4())})
    assert out_of_reach[dup["id"]][0] != "certainly-not" and first["id"] in out_of_reach
    bad = world.client.post("/fhir/R4/Patient/$match", json={"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": {**patient, "id": "not-a-uuid"}}]},
        headers={**world.h("clinic_a"), "Content-Type": "application/fhir+json"})
    assert bad.status_code == 400 and bad.json()["issue"][0]["expression"][0].startswith("Parameters.parameter")


def test_blocking_lookup_keeps_each_callers_scope_with_statements_cached_per_scope(world, runtime):
    """by_keys builds its statement once per pair of scopes (lookup.statement):
    alternating callers of different scopes in one process each see their own scope only."""
    from registry.linkage import records
    from registry.linkage import repository as link_repo
    from registry.patients.models import Patient
    from security.access.permissions import Role
    from security.access.principal import Principal, Scope

    created = _post(world, "clinic_a", _child())
    assert created.status_code == 201
    pid = uuid.UUID(created.json()["id"])
    with runtime.sessions() as s:
        row = s.execute(select(Patient.__table__).where(Patient.__table__.c.id == pid)).one()
        wanted = records.lookup_keys(runtime.indexer, records.from_row(runtime.cipher, row))

        def official(scope: Scope) -> Principal:
            return Principal.build(uuid.uuid4(), "official", Role.HEALTH_OFFICIAL, scope)

        own = official(Scope("province", row.province, province=row.province))
        other = official(Scope("province", "PK-XX", province="PK-XX"))
        other_district = official(Scope("district", row.district + "-X", province=row.province, district=row.district + "-X"))
        district = official(Scope("district", row.district, province=row.province, district=row.district))
        for _ in range(2):
            assert pid in {r.id for r in link_repo.by_keys(s, own, wanted)}
            assert pid not in {r.id for r in link_repo.by_keys(s, other, wanted)}
            assert pid not in {r.id for r in link_repo.by_keys(s, other_district, wanted)}
            assert pid in {r.id for r in link_repo.by_keys(s, district, wanted)}
            assert pid not in {r.id for r in link_repo.by_keys(s, own, wanted, exclude=pid)}


def _register_sync(runtime, world, who: str, body: dict):
    """registry/patients/service.register itself (the sync path: SQLite's, FHIR's; the API on
    PostgreSQL registers on the event loop, registry/patients/async_register.py): (status, view or problem)."""
    from registry.context import ServiceContext
    from registry.errors import Conflict
    from registry.patients import service
    from registry.patients.schemas import PatientCreate
    from registry.users.models import User
    from registry.users.service import principal_of
    from security.access.principal import AccessContext
    from security.audit.trail import AuditTrail

    try:
        with runtime.sessions.begin() as s:
            user = s.execute(select(User).where(User.username == world.users[who])).scalar_one()
            ctx = ServiceContext(s, runtime, AuditTrail(AccessContext(principal_of(user), "TREAT", uuid.uuid4().hex, None)))
            return 201, service.register(ctx, PatientCreate(**body)).model_dump(mode="json")
    except Conflict as exc:
        return 409, exc


def test_the_check_writes_the_new_records_blocking_keys_with_its_lookup_and_a_refusal_writes_none(world, runtime):
    """registry/linkage/lookup.py: the new record's key rows (exactly records.key_rows of it) go
    in the lookup's own statement on PostgreSQL (one round trip for both, with the new health
    ID's uniqueness probe), after it on SQLite. They precede the patient row (the foreign key is
    checked at commit, migration 0038), so a refused registration must roll them back: no key
    row for its id, none anywhere."""
    from sqlalchemy import event

    from registry.linkage import records
    from registry.linkage.match_models import LinkKey
    from registry.patients.models import Patient

    keys = LinkKey.__table__
    seen: list[str] = []

    def listener(conn, cursor, statement, *args):
        if "link_keys" in statement or "patient_identifier_index" in statement:
            seen.append(statement)

    event.listen(runtime.engine, "before_cursor_execute", listener)
    try:
        status, first = _register_sync(runtime, world, "clinic_a", _child(id=str(uuid.uuid4())))
    finally:
        event.remove(runtime.engine, "before_cursor_execute", listener)
    assert status == 201
    pid = uuid.UUID(first["id"])
    looked_up = [x for x in seen if "JOIN link_keys" in x]
    probes = [x for x in seen if "JOIN patient_identifier_index" in x]
    if runtime.engine.dialect.name == "postgresql":
        [one] = looked_up
        assert "INSERT INTO link_keys" in one and probes == [one]
        assert [x for x in seen if "link_keys" in x] == [one]
    else:
        assert len(looked_up) == 1 and len(probes) == 1
        assert [x for x in seen if x.startswith("INSERT INTO link_keys")]
    with runtime.sessions() as s:
        row = s.execute(select(Patient.__table__).where(Patient.__table__.c.id == pid)).one()
        stored = {(r.kind, r.custodian, r.bidx) for r in s.execute(select(keys).where(keys.c.patient_id == pid))}
        total = s.execute(text("SELECT count(*) FROM link_keys")).scalar_one()
    expected = {(k["kind"], k["custodian"], k["bidx"])
                for k in records.key_rows(runtime.indexer, row.custodian, pid, records.from_row(runtime.cipher, row))}
    assert stored == expected and {k for k, _, _ in stored} == {"gbd", "fbd", "ubd", "ph"}

    refused_id = uuid.uuid4()
    body = _variant({**_child(), "id": str(refused_id), "family_name": first["family_name"],
                     "guardian": {"name": first["guardian"]["name"], "relationship": "mother",
                                  "cnic": first["guardian"]["cnic"]}})
    status, exc = _register_sync(runtime, world, "clinic_a", body)
    assert status == 409 and exc.code == "likely_duplicate"
    with runtime.sessions() as s:
        assert s.execute(select(keys).where(keys.c.patient_id == refused_id)).first() is None
        assert s.execute(text("SELECT count(*) FROM link_keys")).scalar_one() == total
        assert s.execute(text("SELECT count(*) FROM link_keys lk LEFT JOIN patients p ON p.id = lk.patient_id "
                              "WHERE p.id IS NULL")).scalar_one() == 0


def test_lookup_statement_writes_keys_on_postgresql_only():
    """SQLite has no data-modifying CTE: asking it for the one-statement form is a programming error."""
    import pytest

    from registry.linkage import lookup
    from security.access.principal import Scope

    from sqlalchemy.dialects import postgresql

    national = Scope("national", "PK")
    with pytest.raises(ValueError):
        lookup.statement(national, national, "sqlite", store=True)
    sql = str(lookup.statement(national, national, "postgresql", store=True).compile(dialect=postgresql.dialect()))
    assert "INSERT INTO link_keys" in sql and "unnest" in sql


def test_a_health_id_already_taken_is_drawn_again_when_probed_with_the_check(world, runtime, monkeypatch):
    """The check probes the new health ID's blind index with its lookup (lookup.registration_statement
    on PostgreSQL): a value another child holds is confirmed by decryption and drawn again."""
    from registry import identifiers

    taken = _register_sync(runtime, world, "clinic_a", _child())[1]["health_id"]
    draws = iter([identifiers.normalise(identifiers.HEALTH_ID_SYSTEM, taken)])
    real = identifiers.new_health_id
    monkeypatch.setattr(identifiers, "new_health_id", lambda: next(draws, None) or real())
    status, view = _register_sync(runtime, world, "clinic_a", _child())
    assert status == 201
    assert view["health_id"] != taken and next(draws, None) is None
