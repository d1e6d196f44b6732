"""The data steward's pages end to end in Chromium (issues 13 and 14): log in, open the queue, open
a pair, merge it, find the merge in the merges list, unmerge it with a later dose ticked; each page
with no request outside the server's origin, no console error and no serious or critical axe-core
violation; the queue and the pair in Urdu, right to left, on a 360 px wide phone."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from conftest import PASSWORD, build_world
from registry.linkage import steward_repository as repo


@pytest.fixture(scope="module")
def twins(client, runtime):
    """Two records of one child at facility a (Lahore), the first with a dose, queued as a pair
    above every other pair of the suite's database (so it is on the queue's first page)."""
    w = build_world(client, runtime)
    a, b = w.register("clinic_a"), w.register("clinic_a")
    r = w.client.post(f"/api/v1/patients/{a['id']}/immunizations", headers=w.h("clinic_a"),
                      json={"vaccine": "BCG", "dose_number": 1, "date_given": a["_input"]["birth_date"]})
    assert r.status_code == 201, r.json()
    cid = uuid.uuid4()
    with runtime.sessions.begin() as s:
        repo.add_candidate(s, {"id": cid, "version": 1, "left_id": uuid.UUID(a["id"]), "right_id": uuid.UUID(b["id"]),
                               "match_weight": 90000.0, "match_probability": 0.99999, "grade": "certain",
                               "levels": {"given_name": 4, "birth_date": 3, "guardian_cnic": 2, "family_name": 1,
                                          "place": 3}, "model_version": "test-1", "source": "dedupe", "status": "open",
                               "created_at": datetime.now(UTC)})
    return w, a, b, str(cid)


def log_in(v, server, username):
    page = v.page
    page.goto(f"{server}/console/login")
    page.locator("#username").fill(username)
    page.locator("#password").fill(PASSWORD)
    page.locator("main button[type=submit]").click()
    page.wait_for_url(f"{server}/console")


def test_steward_merges_a_pair_and_unmerges_it(watched, server, twins, tmp_path):
    w, a, b, cid = twins
    v = watched()
    log_in(v, server, w.users["steward_district"])
    v.page.get_by_role("link", name="Possible duplicates", exact=True).first.click()
    v.page.get_by_role("heading", name="Possible duplicates").wait_for()
    card = v.page.locator(f"article:has(input[name=candidate_id][value='{cid}'])")
    assert "birth date with day and month swapped" in card.inner_text()
    v.assert_clean()
    card.get_by_role("button", name="Compare the two records").click()
    v.page.get_by_role("heading", name="Compare two records").wait_for()
    content = v.page.content()
    assert a["_input"]["given_name"] in content and b["_input"]["given_name"] in content and "BCG-1" in content
    assert cid not in v.page.url and v.page.locator("tr.differs").count() > 0
    v.shot(tmp_path, "steward-pair")
    v.assert_clean()
    v.page.locator(f"input[name=survivor_id][value='{a['id']}']").check()  # the record with the dose survives
    v.page.get_by_label("Note (optional)").fill("same mother, same village; registered twice")
    v.page.get_by_role("button", name="Same child: merge").click()
    v.page.wait_for_url(f"{server}/console/linkage?done=merged")
    assert v.page.locator(f"input[name=candidate_id][value='{cid}']").count() == 0  # no longer queued
    v.assert_clean()
    later = w.client.post(f"/api/v1/patients/{a['id']}/immunizations", headers=w.h("clinic_a"),
                          json={"vaccine": "OPV", "dose_number": 0, "date_given": a["_input"]["birth_date"]}).json()["id"]
    v.page.get_by_role("link", name="Merges", exact=True).first.click()
    row = v.page.locator("tr", has_text=b["id"])
    row.wait_for()
    v.shot(tmp_path, "steward-merges")
    v.assert_clean()
    row.get_by_role("button", name="Review unmerge").click()
    v.page.get_by_role("heading", name="Unmerge", exact=True).wait_for()
    assert b["_input"]["given_name"] in v.page.content()
    v.page.locator(f"input[name=move_dose_ids][value='{later}']").check()
    v.assert_clean()
    v.page.get_by_role("button", name="Unmerge", exact=True).click()
    v.page.wait_for_url(f"{server}/console/linkage/merges?done=unmerged")
    assert "unmerged" in v.page.locator("tr", has_text=b["id"]).inner_text()
    v.assert_clean()
    doses = w.client.get(f"/api/v1/patients/{b['id']}/immunizations", headers=w.h("clinic_a")).json()
    assert {d["id"] for d in doses} == {later}  # the ticked later dose went to the restored record


def test_steward_pages_in_urdu_are_right_to_left_on_a_phone(watched, server, twins, tmp_path, runtime):
    w, a, b, _ = twins
    c = w.register("clinic_a")
    cid = uuid.uuid4()
    with runtime.sessions.begin() as s:
        repo.add_candidate(s, {"id": cid, "version": 1, "left_id": uuid.UUID(c["id"]), "right_id": uuid.UUID(b["id"]),
                               "match_weight": 80000.0, "match_probability": 0.9999, "grade": "certain",
                               "levels": {"given_name": 2, "birth_date": 4, "phone": 2}, "model_version": "test-1",
                               "source": "dedupe", "status": "open", "created_at": datetime.now(UTC)})
    v = watched(width=360, height=740, lang="ur")
    log_in(v, server, w.users["steward_province"])
    v.page.goto(f"{server}/console/linkage")
    assert v.page.evaluate("() => [document.documentElement.lang, document.documentElement.dir]") == ["ur", "rtl"]
    assert v.page.evaluate("() => getComputedStyle(document.querySelector('main')).direction") == "rtl"
    assert v.page.evaluate("() => document.documentElement.scrollWidth") <= 360
    v.shot(tmp_path, "steward-queue-urdu")
    v.assert_clean()
    v.page.locator(f"article:has(input[name=candidate_id][value='{cid}']) button").click()
    v.page.locator("table.compare").wait_for()
    assert v.page.evaluate("() => document.documentElement.scrollWidth") <= 360  # the table scrolls in its own box
    assert c["_input"]["given_name"] in v.page.content()
    v.shot(tmp_path, "steward-pair-urdu")
    v.assert_clean()
