"""The data steward (issue 13): review queue, pair view, decisions, merge and unmerge, and the
refusals (404 outside scope, 409 with a reason code). Real app, real database; candidate pairs
are inserted through the steward repository's `add_candidate` (the matcher has its own
`propose`). Values are compared, never printed."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from conftest import audit_events
from registry.linkage import steward_repository as repo

L = "/api/v1/linkage"
P = "/api/v1/patients"


def pair(rt, a: str, b: str, *, grade="probable", weight=12.5, status="open") -> str:
    cid = uuid.uuid4()
    with rt.sessions.begin() as s:
        repo.add_candidate(s, {"id": cid, "version": 1, "left_id": uuid.UUID(a), "right_id": uuid.UUID(b),
                               "match_weight": weight, "match_probability": 0.97, "grade": grade,
                               "levels": {"given_name": 2, "birth_date": 3, "guardian_cnic": 0},
                               "model_version": "test-1", "source": "dedupe", "status": status,
                               "created_at": datetime.now(UTC)})
    return str(cid)


def dose(w, who: str, pid: str, vaccine="BCG", number=1, given="2026-06-02") -> str:
    r = w.client.post(f"{P}/{pid}/immunizations", json={"vaccine": vaccine, "dose_number": number, "date_given": given},
                      headers=w.h(who))
    assert r.status_code == 201, r.json()
    return r.json()["id"]


def doses_of(rt, pid: str) -> set[str]:
    with rt.sessions() as s:
        return {str(d.id) for d in repo.doses_of(s, uuid.UUID(pid))}


def rid() -> str:
    return uuid.uuid4().hex


@pytest.fixture
def twins(world):
    """Two records of the same child at facility a (Lahore, Punjab), the first with a dose."""
    a, b = world.register("clinic_a"), world.register("clinic_a")
    dose(world, "clinic_a", a["id"])
    return a, b


def queue_ids(w, who: str, **params) -> list[str]:
    r = w.client.get(f"{L}/candidates", params={"limit": 100, **params}, headers=w.h(who))
    assert r.status_code == 200, r.json()
    return [i["id"] for i in r.json()["items"]]


def _all_queue(w, who: str) -> list[dict]:
    items, cursor = [], None
    for _ in range(100):
        r = w.client.get(f"{L}/candidates", params={"limit": 50, **({"cursor": cursor} if cursor else {})}, headers=w.h(who))
        assert r.status_code == 200
        items += r.json()["items"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return items
    pytest.fail("queue did not end")


# --- the role ----------------------------------------------------------------------------------

def test_steward_reads_no_patient_directly(world, twins):
    a, _ = twins
    for path in (f"{P}/{a['id']}", P, f"{P}/{a['id']}/immunizations"):
        assert world.client.get(path, headers=world.h("steward_district")).status_code == 403
    r = world.client.post(f"{P}/search", json={"system": "bform", "value": a["bform"]}, headers=world.h("steward_province"))
    assert r.status_code == 403


def test_permission_invariants():
    """Who reads clinical data (security/access/permissions.py): clinic workers and officials
    through patient routes; the data steward only through the linkage queue, and no other role."""
    from security.access.permissions import CITIZEN_ROLE, ROLE_PERMISSIONS, ROLE_SCOPE_LEVELS, Permission, Role

    clinical = {p for p in Permission if p.value.split(":")[0] in ("patient", "immunization", "bulk", "sync")}
    linkage = {p for p in Permission if p.value.startswith("linkage:")}
    readers = {role for role, perms in ROLE_PERMISSIONS.items() if perms & clinical}
    assert readers == {Role.CLINIC_WORKER, Role.HEALTH_OFFICIAL}
    assert {role for role, perms in ROLE_PERMISSIONS.items() if perms & linkage} == {Role.DATA_STEWARD}
    steward = ROLE_PERMISSIONS[Role.DATA_STEWARD]
    assert linkage <= steward and not (steward - linkage - {Permission.FACILITY_READ, Permission.JURISDICTION_READ})
    assert ROLE_SCOPE_LEVELS[Role.DATA_STEWARD] == {"district", "province"}
    assert CITIZEN_ROLE not in readers


@pytest.mark.parametrize("who", ["clinic_a", "official_province", "auditor", "admin"])
def test_other_roles_cannot_use_the_queue(world, who):
    assert world.client.get(f"{L}/candidates", headers=world.h(who)).status_code == 403


# --- the queue ---------------------------------------------------------------------------------

def test_queue_is_scoped_ordered_and_paginated(world, runtime):
    a1, a2, a3, a4 = (world.register("clinic_a") for _ in range(4))
    c1 = world.register("clinic_c")  # Sindh
    low = pair(runtime, a1["id"], a2["id"], grade="possible", weight=30.0)
    high = pair(runtime, a3["id"], a4["id"], grade="certain", weight=5.0)
    mid = pair(runtime, a1["id"], a3["id"], grade="certain", weight=9.0)
    cross = pair(runtime, a4["id"], c1["id"], grade="probable", weight=8.0)
    mine = {low, high, mid, cross}
    seen = [i for i in _all_queue(world, "steward_district") if i["id"] in mine]
    assert [i["id"] for i in seen] == [mid, high, cross, low]  # certain first, then by weight
    assert all(i["reasons"] for i in seen) and next(i for i in seen if i["id"] == cross)["cross_province"]
    # a cross-province pair goes to both provinces' stewards; the other district's pairs do not
    assert cross in {i["id"] for i in _all_queue(world, "steward_other_province")}
    assert not ({low, high, mid} & {i["id"] for i in _all_queue(world, "steward_other_province")})
    # no values in the queue: ids, scores, reasons
    text = world.client.get(f"{L}/candidates?limit=100", headers=world.h("steward_district")).text
    assert a1["given_name"] not in text and a1["bform"] not in text


def test_bad_cursor_is_an_audited_422(world):
    request_id = rid()
    r = world.client.get(f"{L}/candidates?cursor=nonsense", headers=world.h("steward_district", **{"X-Request-ID": request_id}))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "cursor"
    assert [e.outcome for e in audit_events(world.runtime, request_id=request_id)] == ["invalid"]


# --- the pair view -----------------------------------------------------------------------------

def test_pair_view_decrypts_in_scope_and_audits_each_record(world, runtime, twins):
    a, b = twins
    cid = pair(runtime, a["id"], b["id"])
    request_id = rid()
    r = world.client.get(f"{L}/candidates/{cid}", headers=world.h("steward_district", **{"X-Request-ID": request_id}))
    assert r.status_code == 200 and r.headers["ETag"] == '"1"'
    body = r.json()
    sides = {body["left"]["record"]["id"]: body["left"], body["right"]["record"]["id"]: body["right"]}
    assert sides[a["id"]]["record"]["bform"] == a["bform"] and sides[a["id"]]["record"]["access"] == "capture"
    assert len(sides[a["id"]]["immunizations"]) == 1 and sides[b["id"]]["immunizations"] == []
    assert sides[a["id"]]["suggested_survivor"] and not sides[b["id"]]["suggested_survivor"]
    assert body["candidate"]["reasons"]
    events = audit_events(runtime, request_id=request_id)
    assert sorted(str(e.patient_id) for e in events) == sorted([a["id"], b["id"]])
    assert {(e.action, e.outcome, e.purpose_of_use, e.outside_capture_scope) for e in events} == \
        {("linkage.view", "success", "HOPERAT", False)}


def test_cross_province_pair_shows_the_other_record_for_identity_only(world, runtime):
    a, c = world.register("clinic_a"), world.register("clinic_c")
    dose(world, "clinic_c", c["id"])
    cid = pair(runtime, a["id"], c["id"])
    request_id = rid()
    r = world.client.get(f"{L}/candidates/{cid}", headers=world.h("steward_province", **{"X-Request-ID": request_id}))
    assert r.status_code == 200
    body = r.json()
    other = body["left"] if body["left"]["record"]["id"] == c["id"] else body["right"]
    assert other["record"]["access"] == "search" and "immunizations" not in other
    assert "bform" not in other["record"] and "phone" not in other["record"]
    assert c["bform"] not in r.text and c["phone"] not in r.text
    outside = {str(e.patient_id): e.outside_capture_scope for e in audit_events(runtime, request_id=request_id)}
    assert outside == {a["id"]: False, c["id"]: True}


def test_pair_outside_scope_is_404_and_audited(world, runtime, twins):
    a, b = twins
    cid = pair(runtime, a["id"], b["id"])
    request_id = rid()
    r = world.client.get(f"{L}/candidates/{cid}", headers=world.h("steward_other_province", **{"X-Request-ID": request_id}))
    assert r.status_code == 404 and a["given_name"] not in r.text
    assert [e.outcome for e in audit_events(runtime, request_id=request_id)] == ["denied"]
    assert world.client.get(f"{L}/candidates/{uuid.uuid4()}", headers=world.h("steward_district")).status_code == 404


# --- decisions ---------------------------------------------------------------------------------

def decide(w, who, cid, body, etag='"1"', **headers):
    return w.client.post(f"{L}/candidates/{cid}/decision", json=body, headers=w.h(who, **{"If-Match": etag, **headers}))


def test_not_same_is_remembered_and_leaves_the_queue(world, runtime, twins):
    a, b = twins
    cid = pair(runtime, a["id"], b["id"])
    r = decide(world, "steward_district", cid, {"decision": "not_same"})
    assert r.status_code == 200 and r.json()["status"] == "not_same"
    assert cid not in queue_ids(world, "steward_district")
    with runtime.sessions() as s:
        assert repo.candidate(s, uuid.UUID(cid)).status == "not_same"


def test_unsure_stays_queued_and_marked(world, runtime, twins):
    a, b = twins
    cid = pair(runtime, a["id"], b["id"])
    assert decide(world, "steward_district", cid, {"decision": "unsure"}).status_code == 200
    assert cid in queue_ids(world, "steward_district", status="unsure")
    assert cid not in queue_ids(world, "steward_district", status="open")
    # and it can be decided later, with its new version
    assert decide(world, "steward_district", cid, {"decision": "not_same"}, etag='"2"').status_code == 200


def test_concurrent_decisions_one_wins_the_other_409(world, runtime, twins):
    a, b = twins
    cid = pair(runtime, a["id"], b["id"])
    first = decide(world, "steward_district", cid, {"decision": "same"})
    request_id = rid()
    second = decide(world, "steward_province", cid, {"decision": "not_same"}, **{"X-Request-ID": request_id})
    assert first.status_code == 200 and second.status_code == 409
    assert second.json()["reason"] == "already_decided"
    assert second.headers["content-type"].startswith("application/problem+json")
    assert [e.outcome for e in audit_events(runtime, request_id=request_id)] == ["conflict"]
    with runtime.sessions() as s:
        assert repo.candidate(s, uuid.UUID(cid)).status == "merged"


def test_decision_needs_if_match(world, runtime, twins):
    a, b = twins
    cid = pair(runtime, a["id"], b["id"])
    r = world.client.post(f"{L}/candidates/{cid}/decision", json={"decision": "unsure"}, headers=world.h("steward_district"))
    assert r.status_code == 428


def test_same_merges_into_the_default_survivor(world, runtime, twins):
    a, b = twins  # a has one dose, b none: a survives
    a_doses = doses_of(runtime, a["id"])
    cid = pair(runtime, a["id"], b["id"])
    r = decide(world, "steward_district", cid, {"decision": "same"})
    assert r.status_code == 200, r.json()
    m = r.json()["merge"]
    assert (m["survivor_id"], m["merged_id"]) == (a["id"], b["id"])
    assert doses_of(runtime, a["id"]) == a_doses


def test_merging_the_record_of_another_province_is_404(world, runtime):
    a, c = world.register("clinic_a"), world.register("clinic_c")
    cid = pair(runtime, a["id"], c["id"])
    r = decide(world, "steward_province", cid, {"decision": "same", "survivor_id": a["id"]})
    assert r.status_code == 404
    with runtime.sessions() as s:
        assert repo.candidate(s, uuid.UUID(cid)).status == "open"
    # folding its own record into the other province's is allowed
    r = decide(world, "steward_province", cid, {"decision": "same", "survivor_id": c["id"]})
    assert r.status_code == 200 and r.json()["merge"]["merged_id"] == a["id"]


# --- direct merges: refusals -------------------------------------------------------------------

def merge(w, who, survivor, merged, **headers):
    return w.client.post(f"{L}/merges", json={"survivor_id": survivor, "merged_id": merged}, headers=w.h(who, **headers))


def test_merge_refusals(world, runtime, twins):
    a, b = twins
    c = world.register("clinic_a")
    assert merge(world, "steward_other_province", a["id"], b["id"]).status_code == 404  # outside scope
    assert merge(world, "steward_district", a["id"], str(uuid.uuid4())).status_code == 404
    r = merge(world, "steward_district", a["id"], a["id"])
    assert r.status_code == 409 and r.json()["reason"] == "same_record"
    assert merge(world, "steward_district", a["id"], b["id"]).status_code == 201
    r = merge(world, "steward_district", c["id"], b["id"])
    assert r.status_code == 409 and r.json()["reason"] == "already_merged"
    request_id = rid()
    r = merge(world, "steward_district", b["id"], c["id"], **{"X-Request-ID": request_id})  # into a merged record
    assert r.status_code == 409 and r.json()["reason"] == "survivor_merged"
    assert [e.outcome for e in audit_events(runtime, request_id=request_id)] == ["conflict"]
    r = world.client.post(f"{L}/patients/{c['id']}/unmerge", json={}, headers=world.h("steward_district"))
    assert r.status_code == 409 and r.json()["reason"] == "not_merged"
    r = world.client.post(f"{L}/patients/{b['id']}/unmerge", json={}, headers=world.h("steward_other_province"))
    assert r.status_code == 404


# --- merge and unmerge ---------------------------------------------------------------------------

def test_merge_then_unmerge_restores_every_owner(world, runtime, twins):
    a, b = twins
    d_b = dose(world, "clinic_a", b["id"], "OPV", 0)
    before_a, before_b = doses_of(runtime, a["id"]), doses_of(runtime, b["id"])
    r = merge(world, "steward_district", a["id"], b["id"])
    assert r.status_code == 201 and r.json()["moved_dose_ids"] == [d_b]
    assert doses_of(runtime, a["id"]) == before_a | before_b and doses_of(runtime, b["id"]) == set()
    later = dose(world, "clinic_a", a["id"], "PENTA", 1, "2026-07-13")
    also_later = dose(world, "clinic_a", a["id"], "PCV", 1, "2026-07-13")
    # a dose that was not recorded on the survivor after the merge cannot be moved
    r = world.client.post(f"{L}/patients/{b['id']}/unmerge", json={"move_dose_ids": [next(iter(before_a))]},
                          headers=world.h("steward_district"))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "move_dose_ids"
    r = world.client.post(f"{L}/patients/{b['id']}/unmerge", json={"move_dose_ids": [also_later]},
                          headers=world.h("steward_district"))
    assert r.status_code == 200, r.json()
    assert doses_of(runtime, a["id"]) == before_a | {later}
    assert doses_of(runtime, b["id"]) == before_b | {also_later}
    with runtime.sessions() as s:
        rows = repo.patients(s, [uuid.UUID(a["id"]), uuid.UUID(b["id"])])
        assert all(r.merged_into is None for r in rows.values())
        assert {str(d.id): d.original_patient_id for d in repo.doses_of(s, uuid.UUID(b["id"]))} == \
            {d_b: None, also_later: None}
    r = world.client.post(f"{L}/patients/{b['id']}/unmerge", json={}, headers=world.h("steward_district"))
    assert r.status_code == 409 and r.json()["reason"] == "not_merged"
    listed = world.client.get(f"{L}/merges?limit=100", headers=world.h("steward_district")).json()["items"]
    mine = [m for m in listed if m["merged_id"] == b["id"]]
    assert len(mine) == 1 and mine[0]["unmerged_at"] and mine[0]["unmerge_moved_dose_ids"] == [also_later]


def test_racing_decisions_one_wins_nothing_half_applied(world, runtime, twins):
    """Two stewards decide the same pair at the same moment, with different survivors: one 200,
    one 409, exactly one merge, one record merged."""
    import threading

    a, b = twins
    cid = pair(runtime, a["id"], b["id"])
    headers = {who: world.h(who, **{"If-Match": '"1"'}) for who in ("steward_district", "steward_province")}
    barrier, results = threading.Barrier(2), {}

    def go(who, survivor):
        barrier.wait()
        results[who] = world.client.post(f"{L}/candidates/{cid}/decision", json={"decision": "same", "survivor_id": survivor},
                                         headers=headers[who])

    threads = [threading.Thread(target=go, args=("steward_district", a["id"])),
               threading.Thread(target=go, args=("steward_province", b["id"]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status_code for r in results.values()) == [200, 409]
    lost = next(r for r in results.values() if r.status_code == 409)
    assert lost.json()["reason"] in ("already_decided", "already_merged", "survivor_merged")
    with runtime.sessions() as s:
        rows = repo.patients(s, [uuid.UUID(a["id"]), uuid.UUID(b["id"])])
        assert sorted(r.merged_into is not None for r in rows.values()) == [False, True]
        merges = s.execute(repo.MERGES.select().where(repo.MERGES.c.candidate_id == uuid.UUID(cid))).all()
        assert len(merges) == 1
