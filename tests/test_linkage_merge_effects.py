"""What follows a merge (issue 13): the merged id resolves to the survivor (REST 301, FHIR
Patient.link), writes on it are refused with the survivor's id, identifiers find the survivor,
due lists and the changes feed, certificates, and the citizen view and access log; and an
unmerge brings it all back. Real app and database; values compared, never printed."""

from __future__ import annotations

import uuid

import pytest

from test_linkage_steward import L, P, dose

FEED = "/api/v1/sync/changes"


def merge(w, survivor, merged):
    r = w.client.post(f"{L}/merges", json={"survivor_id": survivor, "merged_id": merged}, headers=w.h("steward_district"))
    assert r.status_code == 201, r.json()
    return r.json()


def unmerge(w, merged, **body):
    r = w.client.post(f"{L}/patients/{merged}/unmerge", json=body, headers=w.h("steward_district"))
    assert r.status_code == 200, r.json()
    return r.json()


def login(w, child) -> dict:
    r = w.client.post("/api/v1/citizen/token", json={"health_id": child["health_id"], "access_code": child["access_code"]})
    assert r.status_code == 200, r.json()
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.fixture
def merged(world):
    """(survivor, merged) at facility a: the merged record had a dose, a certificate and a read."""
    s, m = world.register("clinic_a"), world.register("clinic_a")
    dose(world, "clinic_a", s["id"], "OPV", 0, "2026-06-01")
    moved = dose(world, "clinic_a", m["id"], "BCG", 1, "2026-06-02")
    cert = world.client.get(f"{P}/{m['id']}/certificate", params={"disease": "tuberculosis"}, headers=world.h("clinic_a"))
    assert world.client.get(f"{P}/{m['id']}", headers=world.h("clinic_a2", **{"X-Break-Glass-Reason": "child fainted in the queue"})).status_code == 200
    merge(world, s["id"], m["id"])
    return s, m, moved, cert


def test_reading_a_merged_id_says_where_it_went(world, merged):
    s, m, _, _ = merged
    r = world.client.get(f"{P}/{m['id']}", headers=world.h("clinic_a"), follow_redirects=False)
    assert r.status_code == 301 and r.headers["Location"] == f"{P}/{s['id']}"
    assert r.headers["content-type"].startswith("application/problem+json") and r.json()["merged_into"] == s["id"]
    assert m["given_name"] not in r.text and m["bform"] not in r.text
    followed = world.client.get(f"{P}/{m['id']}", headers=world.h("clinic_a"))
    assert followed.status_code == 200 and followed.json()["id"] == s["id"]
    # outside scope it stays a 404: a merge leaks nothing
    assert world.client.get(f"{P}/{m['id']}", headers=world.h("clinic_c"), follow_redirects=False).status_code == 404


def test_fhir_patient_link(world, merged):
    s, m, _, _ = merged
    old = world.client.get(f"/fhir/R4/Patient/{m['id']}", headers=world.h("clinic_a")).json()
    assert old["link"] == [{"other": {"reference": f"Patient/{s['id']}"}, "type": "replaced-by"}] and old["active"] is False
    new = world.client.get(f"/fhir/R4/Patient/{s['id']}", headers=world.h("clinic_a")).json()
    assert new["link"] == [{"other": {"reference": f"Patient/{m['id']}"}, "type": "replaces"}] and "active" not in new


def test_writes_on_a_merged_id_are_refused_naming_the_survivor(world, merged):
    s, m, _, _ = merged
    r = world.client.post(f"{P}/{m['id']}/immunizations", json={"vaccine": "PENTA", "dose_number": 1,
                                                                  "date_given": "2026-07-13"}, headers=world.h("clinic_a"))
    assert r.status_code == 409 and r.json()["reason"] == "merged" and r.json()["merged_into"] == s["id"]
    r = world.client.get(f"{P}/{m['id']}/certificate", headers=world.h("clinic_a"))
    assert r.status_code == 409


def test_identifiers_of_the_merged_record_find_the_survivor(world, merged):
    s, m, _, _ = merged
    for system, value in (("bform", m["bform"]), ("nhr", m["health_id"]), ("bform", s["bform"])):
        r = world.client.post(f"{P}/search", json={"system": system, "value": value}, headers=world.h("clinic_b"))
        assert r.status_code == 200 and [x["id"] for x in r.json()] == [s["id"]]
    unmerge(world, m["id"])
    r = world.client.post(f"{P}/search", json={"system": "bform", "value": m["bform"]}, headers=world.h("clinic_b"))
    assert [x["id"] for x in r.json()] == [m["id"]]


def _due_ids(w) -> set[str]:
    ids, cursor = set(), None
    for _ in range(50):
        params = {"from": "2026-06-01", "to": "2026-09-01", "limit": 100, **({"cursor": cursor} if cursor else {})}
        r = w.client.get(f"/api/v1/facilities/{w.facilities['a']}/due-list", params=params, headers=w.h("clinic_a"))
        assert r.status_code == 200, r.json()
        ids |= {row["patient_id"] for row in r.json()["items"]}
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return ids
    pytest.fail("due list did not end")


def test_due_list_counts_the_child_once(world, merged):
    s, m, _, _ = merged
    ids = _due_ids(world)
    assert s["id"] in ids and m["id"] not in ids
    unmerge(world, m["id"])
    assert {s["id"], m["id"]} <= _due_ids(world)


def _feed(w) -> list[dict]:
    items, since = [], None
    for _ in range(50):
        params = {"facility": w.facilities["a"], "limit": 100, **({"since": since} if since else {})}
        r = w.client.get(FEED, params=params, headers=w.h("clinic_a"))
        assert r.status_code == 200, r.json()
        items += r.json()["items"]
        since = r.json()["next_cursor"]
        if not r.json()["has_more"]:
            return items
    pytest.fail("feed did not end")


def test_the_changes_feed_tells_devices(world, merged):
    s, m, moved, _ = merged
    entries = {(e["type"], e["id"]): e for e in _feed(world)}  # the latest entry of each record wins
    old, new = entries[("patient", m["id"])], entries[("patient", s["id"])]
    assert old["replaced_by"] == s["id"] and old["immunizations"] == [] and old["patient"]["merged_into"] == s["id"]
    assert moved in {d["id"] for d in new["immunizations"]} and new["replaced_by"] is None
    assert entries[("immunization", moved)]["immunization"]["patient_id"] == s["id"]


def test_certificates_before_the_merge_still_verify_and_revoke(world, merged):
    s, _, _, cert = merged
    assert cert.status_code == 200, cert.json()
    v = world.client.post("/api/v1/certificates/verify", json={"hc1": cert.json()["hc1"]}).json()
    assert v["valid"] is True
    new = world.client.get(f"{P}/{s['id']}/certificate", params={"disease": "tuberculosis"}, headers=world.h("clinic_a"))
    assert new.status_code == 200  # the moved BCG dose now certifies the survivor
    uvci = cert.json()["uvci"].replace("#", "%23")
    r = world.client.post(f"/api/v1/certificates/{uvci}/revoke", json={"reason": "superseded"},
                          headers=world.h("official_district"))
    assert r.status_code == 200, r.json()


def test_both_guardians_codes_show_the_survivor_and_the_log_covers_both(world, merged):
    s, m, moved, _ = merged
    for child in (s, m):
        h = login(world, child)
        me = world.client.get("/api/v1/citizen/me", headers=h).json()
        assert me["health_id"] == s["health_id"]
        doses = world.client.get("/api/v1/citizen/me/immunizations", headers=h).json()
        assert {(d["vaccine"], d["dose_number"]) for d in doses} == {("OPV", 0), ("BCG", 1)}
    log = world.client.get("/api/v1/citizen/me/access-log?limit=100", headers=login(world, s)).json()["items"]
    assert any(e["emergency"] for e in log)  # the break-glass read of the merged record
    assert any(e["action"] == "linkage.merge" for e in log)


def test_fhir_seealso_for_unsure_pairs_in_capture_scope_only(world, runtime):
    from test_linkage_steward import pair

    a, a2, c = world.register("clinic_a"), world.register("clinic_a"), world.register("clinic_c")
    for other in (a2, c):
        cid = pair(runtime, a["id"], other["id"])
        r = world.client.post(f"{L}/candidates/{cid}/decision", json={"decision": "unsure"},
                              headers=world.h("steward_province", **{"If-Match": '"1"'}))
        assert r.status_code == 200
    links = world.client.get(f"/fhir/R4/Patient/{a['id']}", headers=world.h("clinic_a")).json()["link"]
    assert links == [{"other": {"reference": f"Patient/{a2['id']}"}, "type": "seealso"}]  # the Sindh record stays hidden


def test_offline_dose_on_a_merged_id_is_rejected_with_code_merged(world, merged):
    s, m, _, _ = merged
    item = {"op": "dose.record", "patient_id": m["id"],
            "data": {"id": str(uuid.uuid4()), "vaccine": "PENTA", "dose_number": 1, "date_given": "2026-07-13"}}
    r = world.client.post("/api/v1/sync/batch", json={"items": [item]}, headers=world.h("clinic_a"))
    assert r.status_code == 200, r.json()
    (res,) = r.json()["results"]
    assert (res["result"], res["reason"], res["code"]) == ("rejected", "conflict", "merged")
