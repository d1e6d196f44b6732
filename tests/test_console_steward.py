"""The data steward's console pages (issues 13 and 14): the review queue, the pair side by side,
decisions (with an encrypted note), merges and unmerge, through the same services and gate as
`/api/v1/linkage`, with the same audit events; 404 outside scope, CSRF on every form, a clear 409
page when another steward decided first. Values are compared, never printed."""

from __future__ import annotations

import logging
import uuid

import pytest
from sqlalchemy import select

from conftest import audit_events
from console_helpers import signed_in
from registry.linkage.models import LinkCandidate
from test_linkage_steward import dose, doses_of, pair

L = "/api/v1/linkage"


def _events(runtime, rid):
    return sorted((e.action, e.outcome, str(e.patient_id) if e.patient_id else None) for e in audit_events(runtime, request_id=rid))


def _rid() -> str:
    return uuid.uuid4().hex


@pytest.fixture
def twins(world):
    """Two records of the same child at facility a (Lahore), the first with a dose."""
    a, b = world.register("clinic_a"), world.register("clinic_a")
    dose(world, "clinic_a", a["id"])
    return a, b


def test_queue_page_lists_the_apis_pairs_with_reasons_and_the_same_audit_event(app, world, runtime, twins):
    a, b = twins
    cid = pair(runtime, a["id"], b["id"], grade="certain", weight=5000.0)
    c, csrf = signed_in(app, world.users["steward_district"])
    home = c.get("/console").text
    assert 'href="/console/linkage"' in home and 'href="/console/linkage/merges"' in home
    rid = _rid()
    page = c.get("/console/linkage", headers={"X-Request-ID": rid})
    assert page.status_code == 200 and cid in page.text and "birth date with day and month swapped" in page.text
    assert a["_input"]["given_name"] not in page.text  # the queue shows no names
    console = _events(runtime, rid)
    rid = _rid()
    assert world.client.get(f"{L}/candidates?status=open", headers=world.h("steward_district", **{"X-Request-ID": rid})).status_code == 200
    assert console == _events(runtime, rid) and [x[:2] for x in console] == [("linkage.queue", "success")]
    unsure = c.get("/console/linkage?status=unsure").text
    assert cid not in unsure
    c.cookies.set("nhr_lang", "ur")
    urdu = c.get("/console/linkage").text
    assert 'dir="rtl"' in urdu and "day and month swapped" not in urdu  # the reasons are translated too


def test_queue_pages_with_the_apis_cursor(app, world, runtime):
    ids = []
    for k in range(23):
        a, b = world.register("clinic_a"), world.register("clinic_a")
        ids.append(pair(runtime, a["id"], b["id"], grade="certain", weight=1000.0 + k))  # above any other test's pairs
    c, _ = signed_in(app, world.users["steward_district"])
    first = c.get("/console/linkage").text
    assert ids[-1] in first and ids[2] not in first
    import re
    nxt = re.search(r'href="(/console/linkage\?status=open&amp;cursor=[^"]+)"', first).group(1).replace("&amp;", "&")
    second = c.get(nxt).text
    assert ids[2] in second and ids[-1] not in second
    assert c.get("/console/linkage?cursor=nonsense").status_code == 422


@pytest.mark.parametrize("who", ["clinic_a", "official_province", "auditor", "admin"])
def test_other_roles_have_no_steward_pages(app, world, runtime, who):
    c, csrf = signed_in(app, world.users[who])
    assert 'href="/console/linkage"' not in c.get("/console").text
    rid = _rid()
    assert c.get("/console/linkage", headers={"X-Request-ID": rid}).status_code == 403
    assert [x[:2] for x in _events(runtime, rid)] == [("linkage.queue", "denied")]
    assert c.get("/console/linkage/merges").status_code == 403
    assert c.post("/console/linkage/pair", data={"csrf": csrf, "candidate_id": str(uuid.uuid4())}).status_code == 403


def test_pair_page_shows_both_records_differences_and_doses_with_the_apis_events(app, world, runtime, twins):
    a, b = twins
    cid = pair(runtime, a["id"], b["id"])
    c, csrf = signed_in(app, world.users["steward_district"])
    rid = _rid()
    r = c.post("/console/linkage/pair", data={"csrf": csrf, "candidate_id": cid}, headers={"X-Request-ID": rid})
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    for child in (a, b):
        assert child["_input"]["given_name"] in r.text and child["health_id"] in r.text
    assert 'class="differs"' in r.text and "suggested survivor" in r.text and "BCG-1" in r.text
    assert 'name="version" value="1"' in r.text and cid not in str(r.url)
    console = _events(runtime, rid)
    rid = _rid()
    assert world.client.get(f"{L}/candidates/{cid}", headers=world.h("steward_district", **{"X-Request-ID": rid})).status_code == 200
    assert console == _events(runtime, rid) == sorted([("linkage.view", "success", a["id"]), ("linkage.view", "success", b["id"])])


def test_a_pair_outside_scope_is_404_like_the_api(app, world, runtime, twins):
    a, b = twins
    cid = pair(runtime, a["id"], b["id"])
    c, csrf = signed_in(app, world.users["steward_other_province"])
    rid = _rid()
    r = c.post("/console/linkage/pair", data={"csrf": csrf, "candidate_id": cid}, headers={"X-Request-ID": rid})
    assert r.status_code == 404 and a["_input"]["given_name"] not in r.text and "Not found" in r.text
    console = _events(runtime, rid)
    rid = _rid()
    assert world.client.get(f"{L}/candidates/{cid}", headers=world.h("steward_other_province", **{"X-Request-ID": rid})).status_code == 404
    assert console == _events(runtime, rid) and [x[:2] for x in console] == [("linkage.view", "denied")]
    r = c.post("/console/linkage/decide", data={"csrf": csrf, "candidate_id": cid, "version": "1", "decision": "not_same"})
    assert r.status_code == 404


def test_forms_need_the_sessions_csrf_token(app, world, runtime, twins):
    a, b = twins
    cid = pair(runtime, a["id"], b["id"])
    c, csrf = signed_in(app, world.users["steward_district"])
    other, other_csrf = signed_in(app, world.users["steward_province"])
    for token in (None, "x" * 32, other_csrf):  # missing, wrong, another session's
        data = {"candidate_id": cid, "version": "1", "decision": "not_same", **({"csrf": token} if token else {})}
        rid = _rid()
        r = c.post("/console/linkage/decide", data=data, headers={"X-Request-ID": rid})
        assert r.status_code == 403 and [x[:2] for x in _events(runtime, rid)] == [("console.csrf", "denied")]
        assert c.post("/console/linkage/pair", data={k: v for k, v in data.items() if k in ("csrf", "candidate_id")}).status_code == 403
        r = c.post("/console/linkage/merges/unmerge", data={"patient_id": b["id"], **({"csrf": token} if token else {})})
        assert r.status_code == 403
    assert queue_status(runtime, cid) == ("open", 1)  # nothing was decided


def queue_status(runtime, cid):
    with runtime.sessions() as s:
        row = s.execute(select(LinkCandidate.status, LinkCandidate.version).where(LinkCandidate.id == uuid.UUID(cid))).one()
        return row.status, row.version


def test_decisions_write_the_apis_event_and_the_note_is_encrypted_never_logged(app, world, runtime, twins, caplog):
    a, b = twins
    cid = pair(runtime, a["id"], b["id"])
    note = f"Asked the Shadman vaccinator {uuid.uuid4().hex[:8]}: the mother has twins"
    c, csrf = signed_in(app, world.users["steward_district"])
    rid = _rid()
    with caplog.at_level(logging.DEBUG):
        r = c.post("/console/linkage/decide", headers={"X-Request-ID": rid},
                   data={"csrf": csrf, "candidate_id": cid, "version": "1", "decision": "unsure", "note": note})
    assert r.status_code == 303 and r.headers["location"] == "/console/linkage?done=unsure"
    assert note not in caplog.text and note[:30] not in caplog.text
    [ev] = audit_events(runtime, request_id=rid)
    assert (ev.action, ev.outcome, ev.detail) == ("linkage.decide", "success", {"decision": "unsure", "note": True})
    assert note not in str(ev.detail)
    with runtime.sessions() as s:  # ciphertext only, bound to the row
        row = s.execute(select(LinkCandidate).where(LinkCandidate.id == uuid.UUID(cid))).scalar_one()
        assert row.status == "unsure" and row.note_ct and note.encode() not in row.note_ct and row.note_custodian == "PK-PB"
    raw = _database_bytes(runtime)
    assert raw is None or note.encode() not in raw
    assert cid in c.get("/console/linkage?status=unsure").text  # unsure stays queued, under its tab
    page = c.post("/console/linkage/pair", data={"csrf": csrf, "candidate_id": cid}).text
    assert note.replace(":", ":") in page.replace("&#39;", "'") and 'name="version" value="2"' in page  # shown back to the steward
    api = world.client.get(f"{L}/candidates/{cid}", headers=world.h("steward_district")).json()
    assert api["note"] == note  # the API's pair view decrypts it too
    rid = _rid()  # the same decision through the API writes the same event
    r = world.client.post(f"{L}/candidates/{cid}/decision", json={"decision": "not_same"},
                          headers=world.h("steward_district", **{"If-Match": '"2"', "X-Request-ID": rid}))
    assert r.status_code == 200
    [api_ev] = audit_events(runtime, request_id=rid)
    assert (api_ev.action, api_ev.outcome, api_ev.detail) == ("linkage.decide", "success", {"decision": "not_same", "note": False})


def _database_bytes(runtime) -> bytes | None:
    url = runtime.settings.database_url
    if not url.startswith("sqlite"):
        return None
    from pathlib import Path

    runtime.engine.dispose()
    path = Path(url.split("///", 1)[1])
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def test_a_decision_that_lost_the_race_gets_a_clear_409_page(app, world, runtime, twins):
    a, b = twins
    cid = pair(runtime, a["id"], b["id"])
    c, csrf = signed_in(app, world.users["steward_district"])
    other, other_csrf = signed_in(app, world.users["steward_province"])
    page = c.post("/console/linkage/pair", data={"csrf": csrf, "candidate_id": cid}).text
    assert 'name="version" value="1"' in page
    r = other.post("/console/linkage/decide", data={"csrf": other_csrf, "candidate_id": cid, "version": "1",
                                                   "decision": "not_same"})
    assert r.status_code == 303
    rid = _rid()
    r = c.post("/console/linkage/decide", headers={"X-Request-ID": rid},
               data={"csrf": csrf, "candidate_id": cid, "version": "1", "decision": "same", "survivor_id": a["id"]})
    assert r.status_code == 409 and "Already decided by someone else" in r.text and "Traceback" not in r.text
    assert [x[:2] for x in _events(runtime, rid)] == [("linkage.decide", "conflict")]
    assert queue_status(runtime, cid) == ("not_same", 2) and doses_of(runtime, b["id"]) == set()  # nothing half-applied
    c.cookies.set("nhr_lang", "ur")
    urdu = c.post("/console/linkage/decide",
                  data={"csrf": csrf, "candidate_id": cid, "version": "1", "decision": "unsure"})
    assert urdu.status_code == 409 and 'dir="rtl"' in urdu.text and "Already decided" not in urdu.text


def test_merge_from_the_pair_page_then_unmerge_with_a_later_dose_ticked(app, world, runtime, twins):
    a, b = twins
    moved = doses_of(runtime, a["id"])
    cid = pair(runtime, a["id"], b["id"])
    c, csrf = signed_in(app, world.users["steward_district"])
    rid = _rid()  # b survives: a's dose moves to b
    r = c.post("/console/linkage/decide", headers={"X-Request-ID": rid},
               data={"csrf": csrf, "candidate_id": cid, "version": "1", "decision": "same", "survivor_id": b["id"]})
    assert r.status_code == 303 and r.headers["location"] == "/console/linkage?done=merged"
    [ev] = audit_events(runtime, request_id=rid)
    assert (ev.action, ev.outcome, str(ev.patient_id)) == ("linkage.decide", "success", a["id"])
    assert doses_of(runtime, b["id"]) == moved
    later = dose(world, "clinic_a", b["id"], vaccine="OPV", number=0)  # recorded on the survivor after the merge
    stays = dose(world, "clinic_a", b["id"], vaccine="HEPB", number=1)
    rid = _rid()
    merges = c.get("/console/linkage/merges", headers={"X-Request-ID": rid})
    assert merges.status_code == 200 and a["id"] in merges.text and "Review unmerge" in merges.text
    assert [x[:2] for x in _events(runtime, rid)] == [("linkage.merges", "success")]
    rid = _rid()
    page = c.post("/console/linkage/merges/choice", data={"csrf": csrf, "patient_id": a["id"]}, headers={"X-Request-ID": rid})
    assert page.status_code == 200 and a["_input"]["given_name"] in page.text
    assert f'value="{later}"' in page.text and f'value="{stays}"' in page.text and f'value="{next(iter(moved))}"' not in page.text
    console = _events(runtime, rid)
    rid = _rid()
    api = world.client.get(f"{L}/patients/{a['id']}/unmerge", headers=world.h("steward_district", **{"X-Request-ID": rid}))
    assert api.status_code == 200 and {d["id"] for d in api.json()["later"]} == {later, stays}
    assert console == _events(runtime, rid) == sorted([("linkage.view", "success", a["id"]), ("linkage.view", "success", b["id"])])
    rid = _rid()
    r = c.post("/console/linkage/merges/unmerge", headers={"X-Request-ID": rid},
               data={"csrf": csrf, "patient_id": a["id"], "move_dose_ids": [later], "candidate_status": "unsure"})
    assert r.status_code == 303 and r.headers["location"] == "/console/linkage/merges?done=unmerged"
    assert [x[:2] for x in _events(runtime, rid)] == [("linkage.unmerge", "success")]
    assert doses_of(runtime, a["id"]) == moved | {later} and doses_of(runtime, b["id"]) == {stays}
    assert queue_status(runtime, cid)[0] == "unsure"
    again = c.post("/console/linkage/merges/choice", data={"csrf": csrf, "patient_id": a["id"]})
    assert again.status_code == 409 and "not merged" in again.text
    r = c.post("/console/linkage/merges/unmerge", data={"csrf": csrf, "patient_id": a["id"]})
    assert r.status_code == 409 and "Traceback" not in r.text


def test_unmerge_pages_outside_scope_are_404(app, world, runtime, twins):
    a, b = twins
    r = world.client.post(f"{L}/merges", json={"survivor_id": a["id"], "merged_id": b["id"]}, headers=world.h("steward_district"))
    assert r.status_code == 201
    c, csrf = signed_in(app, world.users["steward_other_province"])
    rid = _rid()
    r = c.post("/console/linkage/merges/choice", data={"csrf": csrf, "patient_id": b["id"]}, headers={"X-Request-ID": rid})
    assert r.status_code == 404 and b["_input"]["given_name"] not in r.text
    assert [x[:2] for x in _events(runtime, rid)] == [("linkage.view", "denied")]
    rid = _rid()
    r = c.post("/console/linkage/merges/unmerge", data={"csrf": csrf, "patient_id": b["id"]}, headers={"X-Request-ID": rid})
    assert r.status_code == 404 and [x[:2] for x in _events(runtime, rid)] == [("linkage.unmerge", "denied")]
    assert b["id"] not in c.get("/console/linkage/merges").text


def test_every_reason_grade_and_linkage_refusal_has_an_urdu_translation():
    """The queue's reasons, grades and statuses, and the linkage refusals shown on error pages, are
    fixed English messages translated at render time (they are not literals in the templates)."""
    from api.console import i18n
    from api.console.linkage_routes import FIELDS
    from registry.linkage.explain import BLOOM, MESSAGES

    messages = {m for levels in MESSAGES.values() for m in levels.values()} | {m for _, m in BLOOM}
    messages |= {label for label, _ in FIELDS} | {"certain", "probable", "possible", "open", "unsure", "merged", "not_same",
                                                  "registration", "dedupe", "cross_province", "match"}
    messages |= {"the pair was decided or changed since you read it; reload the queue", "candidate pair not found",
                 "this record is not merged into another; there is nothing to unmerge", "patient not found"}
    ur = i18n.translations("ur")
    assert not sorted(m for m in messages if ur.gettext(m) == m)


def test_a_cross_province_pair_shows_the_other_record_for_identity_only_and_offers_it_as_survivor(app, world, runtime):
    a, other = world.register("clinic_a"), world.register("clinic_c")  # Punjab, Sindh
    dose(world, "clinic_c", other["id"])
    cid = pair(runtime, a["id"], other["id"])
    c, csrf = signed_in(app, world.users["steward_province"])
    rid = _rid()
    page = c.post("/console/linkage/pair", data={"csrf": csrf, "candidate_id": cid}, headers={"X-Request-ID": rid}).text
    assert other["_input"]["given_name"] in page and "identity only" in page
    for withheld in (other["_input"]["bform"], other["_input"]["phone"], other["_input"]["guardian"]["cnic"], "BCG-1"):
        assert withheld not in page  # no national IDs, contact details or doses of the other province's child
    assert a["_input"]["bform"] in page  # the steward's own record in full
    # only the Sindh record may survive: a Punjab steward never retires the Sindh record
    assert f'name="survivor_id" value="{other["id"]}"' in page and f'name="survivor_id" value="{a["id"]}"' not in page
    outside = {str(e.patient_id): e.outside_capture_scope for e in audit_events(runtime, request_id=rid)}
    assert outside == {a["id"]: False, other["id"]: True}
    r = c.post("/console/linkage/decide", data={"csrf": csrf, "candidate_id": cid, "version": "1", "decision": "same",
                                                "survivor_id": a["id"]})  # crafted: retire the Sindh record
    assert r.status_code == 404 and queue_status(runtime, cid) == ("open", 1)
