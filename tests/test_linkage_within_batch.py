"""The same child twice in one uploaded file (issue 13): the second row is flagged
`likely_duplicate_in_file` instead of becoming a second record, in a bulk import (rows of one
chunk are compared with each other: registry/linkage/within_batch.py) and in a sync batch (a
registration that matches a patient created earlier in the same batch). Confirmed rows are
imported and the pair goes to the review queue. Real app and database; values compared, never printed."""

from __future__ import annotations

import csv
import itertools
import secrets
import uuid

from sqlalchemy import select

from registry.bulk import importer
from registry.linkage import comparisons, within_batch
from registry.linkage.models import LinkCandidate
from registry.linkage.scoring import DEFAULT_THRESHOLDS, Model, default_parameters


# Family and mothers' names that no two children share, nor resemble: a random tag after a common
# stem ("Qizil<hex>") left two children's names alike often enough to be proposed as one child.
_FAMILIES = itertools.cycle(["Qureshi", "Baloch", "Chaudhry", "Siddiqui", "Afridi", "Memon", "Bhatti", "Yousafzai",
                             "Khattak", "Soomro", "Lashari", "Durrani"])
_MOTHERS = itertools.cycle(["Mehrunnisa", "Zubaida", "Farkhanda", "Shagufta", "Nasreen", "Tahira", "Rukhsana",
                            "Parveen", "Gulnaz", "Sakina", "Bushra", "Yasmin", "Kaneez"])


def _child() -> dict:
    """A child with no B-form, no phone and no guardian CNIC: only names, dates and place. Within a
    test (at most 12 children) no two share or resemble a family or mother's name; across tests the
    random tag keeps them apart from earlier tests' children."""
    tag = secrets.token_hex(3)
    return {"id": str(uuid.uuid4()), "given_name": "Muhammad", "family_name": f"{next(_FAMILIES)} {tag}", "sex": "male",
            "birth_date": "2026-03-07", "guardian_name": f"{next(_MOTHERS)} {tag}", "guardian_relationship": "mother"}


def _again(row: dict, **over) -> dict:
    """The same child written a second time: another spelling, day and month swapped, a new id."""
    return {**row, "id": str(uuid.uuid4()), "given_name": "Mohammad", "birth_date": "2026-07-03", **over}


def _import(world, runtime, tmp_path, rows: list[dict], chunk_size: int = 100):
    fields = list(dict.fromkeys(k for r in rows for k in r))
    f = tmp_path / f"children-{secrets.token_hex(3)}.csv"
    with open(f, "w", newline="") as out:
        w = csv.DictWriter(out, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    res = importer.run(runtime, f, username=world.users["clinic_a"], fmt="csv-patients", chunk_size=chunk_size)
    report = tmp_path / f"errors-{secrets.token_hex(3)}.csv"
    importer.write_error_report(runtime, res.run_id, report)
    return res, [(x["row"], x["field"], x["reason"]) for x in csv.DictReader(open(report))]


def _exists(world, pid: str) -> bool:
    return world.client.get(f"/api/v1/patients/{pid}", headers=world.h("clinic_a")).status_code == 200


def _pairs(runtime, a: str, b: str) -> list:
    t = LinkCandidate.__table__
    left, right = sorted((uuid.UUID(a), uuid.UUID(b)), key=str)
    with runtime.sessions() as s:
        return list(s.execute(select(t).where(t.c.left_id == left, t.c.right_id == right)))


def test_import_flags_the_second_row_of_the_same_child(world, runtime, tmp_path):
    first, other = _child(), _child()
    again, third = _again(first), _again(first, given_name="Md", birth_date="2026-03-08")
    res, report = _import(world, runtime, tmp_path, [first, other, again, third])
    assert (res.imported, res.rejected) == (2, 2)
    assert report == [("3", "confirm_not_duplicate", "likely_duplicate_in_file"),
                      ("4", "confirm_not_duplicate", "likely_duplicate_in_file")]
    assert _exists(world, first["id"]) and _exists(world, other["id"])
    assert not _exists(world, again["id"]) and not _exists(world, third["id"])
    # no value of the rows in the report
    text = "\n".join(",".join(r) for r in report)
    assert first["family_name"] not in text and first["guardian_name"] not in text


def test_a_confirmed_second_row_is_imported_and_queued(world, runtime, tmp_path):
    first = _child()
    again = _again(first, confirm_not_duplicate="true")
    res, report = _import(world, runtime, tmp_path, [first, again])
    assert (res.imported, res.rejected, report) == (2, 0, [])
    [pair] = _pairs(runtime, first["id"], again["id"])
    assert pair.status == "open" and pair.grade in ("certain", "probable") and pair.source == "registration"


def test_different_children_in_one_file_are_all_imported(world, runtime, tmp_path):
    rows = [_child() for _ in range(5)]
    res, report = _import(world, runtime, tmp_path, rows)
    assert (res.imported, res.rejected, report) == (5, 0, [])


def test_within_batch_scores_with_the_engine():
    """The check itself, on prepared records: flags the later copy only, and the earlier kept row it matches."""
    model = Model.from_parameters("configured-1", default_parameters(), DEFAULT_THRESHOLDS)

    def rec(given, family, guardian, born):
        return comparisons.prepare(given_name=given, family_name=family, guardian_name=guardian, guardian_cnic=None,
                                   bform=None, phone=None, birth_date=born, sex="female", facility="F1",
                                   district="PK-PB-LAH", province="PK-PB", unnamed=False)

    import datetime as dt
    d = dt.date(2025, 2, 11)
    records = [rec("Ayesha", "Qureshi", "Nasreen Bibi", d), rec("Zainab", "Malik", "Rukhsana", d),
               rec("Aisha", "Qureshi", "Nasreen Bibi", dt.date(2025, 11, 2)), rec("Ayesha", "Qureshi", "Nasreen", d)]
    out = within_batch.check(model, records, [False, False, False, True])
    assert set(out.likely) == {2} and out.likely[2][0] == 0
    assert [j for j, _ in out.propose[3]] == [0]  # confirmed: kept, and proposed with the first


def test_sync_batch_flags_the_second_registration_of_the_same_child(world, runtime):
    def item(body):
        data = {k: v for k, v in body.items() if k not in ("guardian_name", "guardian_relationship", "confirm_not_duplicate")}
        data["guardian"] = {"name": body["guardian_name"], "relationship": "mother"}
        if body.get("confirm_not_duplicate"):
            data["confirm_not_duplicate"] = True
        return {"op": "patient.create", "data": data}

    first = _child()
    again = _again(first)
    r = world.client.post("/api/v1/sync/batch", json={"items": [item(first), item(again)]}, headers=world.h("clinic_a"))
    assert r.status_code == 200, r.json()
    one, two = r.json()["results"]
    assert one["result"] == "created"
    assert (two["result"], two["reason"], two["code"], two["field"]) == \
           ("rejected", "conflict", "likely_duplicate_in_file", "confirm_not_duplicate")
    assert not _exists(world, again["id"])
    # a child already in the registry before the batch stays `likely_duplicate`
    r = world.client.post("/api/v1/sync/batch", json={"items": [item(_again(first))]}, headers=world.h("clinic_a"))
    assert r.json()["results"][0]["code"] == "likely_duplicate"
    # resent with the confirmation, it is registered and the pair queued
    r = world.client.post("/api/v1/sync/batch", json={"items": [item({**again, "confirm_not_duplicate": True})]},
                          headers=world.h("clinic_a"))
    assert r.json()["results"][0]["result"] == "created"
    assert _pairs(runtime, first["id"], again["id"])


def test_import_flags_the_same_child_across_chunks_of_one_file(world, runtime, tmp_path):
    """Rows in different chunks: the earlier chunk is committed, so the later copy meets it in the
    registry check; it is `likely_duplicate_in_file` because this run imported the first (the
    run's own import events say so), while a copy of a child registered before the file stays
    `likely_duplicate`."""
    before = _child()
    r = world.client.post("/api/v1/patients", headers=world.h("clinic_a"), json={
        **{k: v for k, v in before.items() if k not in ("id", "guardian_name", "guardian_relationship")},
        "guardian": {"name": before["guardian_name"], "relationship": "mother"}})
    assert r.status_code == 201, r.json()
    first, other = _child(), _child()
    res, report = _import(world, runtime, tmp_path, [first, other, _again(first), _again(before)], chunk_size=1)
    assert res.imported == 2
    assert report == [("3", "confirm_not_duplicate", "likely_duplicate_in_file"),
                      ("4", "confirm_not_duplicate", "likely_duplicate")]


def _fhir_patient(row: dict, full_url: str | None = None) -> dict:
    res = {"resourceType": "Patient", "name": [{"given": [row["given_name"]], "family": row["family_name"]}], "gender": row["sex"],
           "birthDate": row["birth_date"], "contact": [{"name": {"text": row["guardian_name"]}}]}
    return {"fullUrl": full_url or f"urn:uuid:{uuid.uuid4()}", "resource": res, "request": {"method": "POST", "url": "Patient"}}


def _bundle(world, kind: str, entries: list[dict]):
    return world.client.post("/fhir/R4", json={"resourceType": "Bundle", "type": kind, "entry": entries},
                             headers={**world.h("clinic_a"), "Content-Type": "application/fhir+json"})


def _detail(outcome: dict) -> str:
    return outcome["issue"][0]["details"]["coding"][0]["code"]


def test_fhir_bundle_flags_the_same_child_twice_as_in_file(world, runtime):
    """The same child twice in one transaction Bundle: 409, `likely_duplicate_in_file` (issue
    details), pointing at the second entry, nothing written; in a batch Bundle the first entry is
    created and the second refused so; a child registered before the Bundle stays `likely_duplicate`."""
    first = _child()
    r = _bundle(world, "transaction", [_fhir_patient(first), _fhir_patient(_again(first))])
    assert r.status_code == 409, r.json()
    issue = r.json()["issue"][0]
    assert _detail(r.json()) == "likely_duplicate_in_file" and issue["expression"][0].startswith("Bundle.entry[1]")
    assert "earlier entry of this upload" in issue["diagnostics"]

    r = _bundle(world, "batch", [_fhir_patient(first), _fhir_patient(_again(first))])
    assert r.status_code == 200, r.json()
    one, two = r.json()["entry"]
    assert one["response"]["status"].startswith("201")
    assert two["response"]["status"].startswith("409") and _detail(two["response"]["outcome"]) == "likely_duplicate_in_file"

    # the first is in the registry now: a later Bundle's copy of it is an ordinary likely duplicate
    r = _bundle(world, "transaction", [_fhir_patient(_again(first))])
    assert r.status_code == 409 and _detail(r.json()) == "likely_duplicate"


def test_in_file_holds_after_an_interrupted_import_is_resumed(world, runtime, tmp_path):
    """The first chunk committed, the import interrupted, then resumed: the copy in a later chunk
    is still recognised as the same file's (the run's events, not the process's memory)."""
    first, other = _child(), _child()
    rows = [first, other, _again(first)]
    f = tmp_path / f"children-{secrets.token_hex(3)}.csv"
    with open(f, "w", newline="") as out:
        w = csv.DictWriter(out, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        w.writeheader()
        w.writerows(rows)

    class Interrupted(Exception):
        pass

    def stop_after_first(progress):
        raise Interrupted

    try:
        importer.run(runtime, f, username=world.users["clinic_a"], fmt="csv-patients", chunk_size=1, on_chunk=stop_after_first)
    except Interrupted:
        pass
    res = importer.run(runtime, f, username=world.users["clinic_a"], fmt="csv-patients", chunk_size=1)
    assert res.resumed_from == 1 and res.imported == 2
    report = tmp_path / f"errors-{secrets.token_hex(3)}.csv"
    importer.write_error_report(runtime, res.run_id, report)
    assert [(x["row"], x["reason"]) for x in csv.DictReader(open(report))] == [("3", "likely_duplicate_in_file")]
