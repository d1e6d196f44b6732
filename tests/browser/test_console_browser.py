"""Each console page built so far, end to end in Chromium: the task done, a screenshot, no request
outside the server's origin, no console error, no serious or critical axe-core violation; Urdu laid
out right to left; a clinic worker cannot open another province's child through the console."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import PASSWORD, build_world


@pytest.fixture(scope="module")
def people(client, runtime):
    """Users and a child with doses (registered through the API, as a clinic app would)."""
    w = build_world(client, runtime)
    child = w.register("clinic_a")
    for vaccine, n in (("BCG", 1), ("OPV", 0)):
        r = w.client.post(f"/api/v1/patients/{child['id']}/immunizations", headers=w.h("clinic_a"),
                          json={"vaccine": vaccine, "dose_number": n, "date_given": child["_input"]["birth_date"]})
        assert r.status_code == 201, r.json()
    hc1 = w.client.get(f"/api/v1/patients/{child['id']}/certificate", headers=w.h("clinic_a")).json()["hc1"]
    return w, child, hc1


def log_in(v, server, username):
    page = v.page
    page.goto(f"{server}/console/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{server}/console")


def test_verifier_checks_a_certificate(watched, server, people, tmp_path):
    _, child, hc1 = people
    v = watched(width=360, height=740)  # a low-end phone
    v.page.goto(f"{server}/verify")
    v.page.get_by_label("Certificate text (starts with HC1:)").fill(hc1)
    v.page.get_by_role("button", name="Verify").click()
    v.page.get_by_role("heading", name="Valid certificate").wait_for()
    assert child["_input"]["given_name"] in v.page.content()
    assert v.page.evaluate("() => document.documentElement.scrollWidth") <= 360  # no sideways scrolling at 360 px
    v.shot(tmp_path, "verify-valid")
    v.assert_clean()
    v.page.get_by_label("Certificate text (starts with HC1:)").fill(hc1[:-8] + "AAAAAAAA")
    v.page.get_by_role("button", name="Verify").click()
    v.page.get_by_role("heading", name="Not valid").wait_for()
    v.assert_clean()


def test_official_finds_a_child_and_reads_the_record(watched, server, people, tmp_path):
    w, child, _ = people
    v = watched()
    log_in(v, server, w.users["official_district"])
    v.page.get_by_role("link", name="Find a child", exact=True).first.click()
    v.page.get_by_label("Identifier type").first.select_option("bform")
    v.page.locator("#value").fill(child["_input"]["bform"])
    v.page.get_by_role("button", name="Search", exact=True).click()
    v.page.get_by_role("heading", name="Results").wait_for()
    assert child["_input"]["bform"] not in v.page.url  # the identifier travelled in the body
    v.shot(tmp_path, "find-child")
    v.assert_clean()
    v.page.get_by_role("button", name="Open record").click()
    v.page.get_by_role("heading", name="Schedule status").wait_for()
    assert "BCG" in v.page.content() and child["health_id"] in v.page.content()
    v.shot(tmp_path, "child-record")
    v.assert_clean()
    v.page.emulate_media(media="print")  # the print stylesheet hides navigation and forms
    assert not v.page.locator("header.top").is_visible()
    v.page.emulate_media(media="screen")
    v.page.get_by_role("button", name="Log out").click()
    v.page.wait_for_url(f"{server}/console/login")
    v.page.goto(f"{server}/console/children")
    v.page.wait_for_url(f"{server}/console/login")  # the session ended on the server


def test_urdu_is_right_to_left(watched, server, people, tmp_path):
    w, _, _ = people
    v = watched(lang="ur")
    v.page.goto(f"{server}/console/login")
    assert v.page.evaluate("() => [document.documentElement.lang, document.documentElement.dir]") == ["ur", "rtl"]
    assert v.page.evaluate("() => getComputedStyle(document.querySelector('main')).direction") == "rtl"
    # right to left: the registry's name sits at the right-hand end of the bar, the language switch to its left
    brand = v.page.locator(".brand").bounding_box()
    langs = v.page.locator(".langs").bounding_box()
    assert brand["x"] > langs["x"]
    font = v.page.evaluate("() => getComputedStyle(document.documentElement).fontFamily")
    assert "Nastaliq" in font
    v.shot(tmp_path, "login-urdu")
    v.assert_clean()
    v.page.get_by_role("link", name="English").click()  # the switch is remembered in a cookie
    v.page.wait_for_url(f"{server}/console/login")
    assert v.page.evaluate("() => document.documentElement.dir") == "ltr"


def test_a_clinic_worker_cannot_open_another_provinces_child(watched, server, people, tmp_path):
    w, child, _ = people
    v = watched()
    log_in(v, server, w.users["clinic_c"])
    v.page.goto(f"{server}/console/children")
    # post the record form for a child of another province, as a crafted request would
    v.page.evaluate("""(id) => {
        const f = document.createElement('form'); f.method = 'post'; f.action = '/console/children/record';
        const csrf = document.querySelector('input[name=csrf]').cloneNode(); f.appendChild(csrf);
        const i = document.createElement('input'); i.type = 'hidden'; i.name = 'patient_id'; i.value = id; f.appendChild(i);
        document.body.appendChild(f); f.submit(); }""", child["id"])
    v.page.get_by_role("heading", name="Not found").wait_for()
    assert child["_input"]["given_name"] not in v.page.content()
    v.shot(tmp_path, "clinic-other-province-not-found")
    v.errors = [e for e in v.errors if "404" not in e]  # the browser logs the 404 status itself
    v.assert_clean()


def test_the_checks_can_fail(watched, server):
    """The origin guard and the axe check see what they are meant to see."""
    v = watched()
    v.page.goto(f"{server}/verify")
    v.page.evaluate("""() => { const i = document.createElement('img'); i.src = 'https://cdn.example.org/x.png';
                                document.querySelector('main').appendChild(i); }""")
    v.page.wait_for_timeout(300)  # let the refusal be reported (an event wait, not a timed assertion)
    # the CSP refuses it before it reaches the network (a console error); had it not, the route guard records it
    assert v.foreign == ["https://cdn.example.org/x.png"] or any("Content Security Policy" in e for e in v.errors), v.errors
    with pytest.raises(AssertionError):
        v.assert_clean()
    assert "image-alt" in {x["id"] for x in v.axe_serious()}


def test_official_reads_coverage_drills_down_and_downloads_csv(watched, server, people, tmp_path):
    w, _, _ = people
    v = watched()
    log_in(v, server, w.users["official_province"])
    v.page.get_by_role("link", name="Coverage", exact=True).first.click()
    v.page.get_by_label("Birth cohort (year or year-month)").fill("2026")
    v.page.get_by_role("button", name="Show").click()
    v.page.locator("figure.chart svg[role=img]").wait_for()
    v.assert_clean()
    v.page.locator("form:has(input[name=jurisdiction][value='PK-PB-LAH']) button").first.click()
    v.page.get_by_role("heading", name="birth cohort").wait_for()
    assert "PK-PB-LAH" in v.page.locator("input#jurisdiction").input_value()
    assert v.page.evaluate("() => document.documentElement.scrollWidth") <= 1024  # wide tables scroll in their own box
    v.shot(tmp_path, "coverage")
    v.assert_clean()
    with v.page.expect_download() as d:
        v.page.get_by_role("button", name="Download CSV").click()
    assert d.value.suggested_filename == "coverage-2026.csv"
    assert Path(d.value.path()).read_text().startswith("jurisdiction_code,")


def test_auditor_reviews_emergency_accesses(watched, server, people, tmp_path):
    w, child, _ = people
    reason = "child brought in after a road accident"
    r = w.client.get(f"/api/v1/patients/{child['id']}", headers=w.h("official_other_province", **{"X-Break-Glass-Reason": reason}))
    assert r.status_code == 200
    v = watched()
    log_in(v, server, w.users["auditor"])
    v.page.get_by_role("link", name="Audit events", exact=True).first.click()
    v.page.get_by_label("Emergency access").select_option("yes")
    v.page.get_by_label("Patient (record id)").fill(child["id"])
    v.page.get_by_role("button", name="Search", exact=True).click()
    v.page.get_by_role("heading", name="Events", exact=True).wait_for()
    assert reason in v.page.content() and child["id"] not in v.page.url
    v.shot(tmp_path, "audit-events")
    v.assert_clean()


def test_administrator_creates_and_deactivates_an_account(watched, server, people, tmp_path):
    w, _, _ = people
    v = watched(width=360, height=740)
    log_in(v, server, w.users["admin"])
    v.page.goto(f"{server}/console/staff")
    name = f"outreach.{w.tag}"
    v.page.get_by_label("Username").fill(name)
    v.page.get_by_label("Name", exact=True).fill("Outreach Vaccinator")
    v.page.get_by_label("Role").select_option("clinic_worker")
    v.page.get_by_label("Facility or jurisdiction code").fill(w.facilities["a"])
    v.page.get_by_label("Initial password", exact=False).fill("a-long-enough-passphrase-77")
    v.page.get_by_role("button", name="Create account").click()
    v.page.get_by_role("button", name=f"Deactivate {name}").wait_for()
    v.shot(tmp_path, "staff-accounts")
    v.assert_clean()
    v.page.get_by_role("button", name=f"Reset password {name}").click()  # a confirmation page first
    v.page.get_by_role("heading", name="Reset this account's password?").wait_for()
    v.assert_clean()
    v.page.get_by_role("button", name="Confirm").click()
    v.page.get_by_role("heading", name="New password").wait_for()
    assert len(v.page.locator("code.once").inner_text()) >= 20  # shown once
    v.assert_clean()
    v.page.get_by_role("link", name="Back to the staff accounts").click()
    v.page.get_by_role("button", name=f"Deactivate {name}").click()
    v.page.get_by_role("heading", name="Deactivate this account?").wait_for()
    v.page.get_by_role("button", name="Confirm").click()
    v.page.wait_for_url(f"{server}/console/staff")
    assert v.page.get_by_role("button", name=f"Deactivate {name}").count() == 0
    v.page.get_by_role("button", name=f"Reactivate {name}").wait_for()
    v.assert_clean()


def test_guardian_sees_the_record_doses_and_who_opened_it_in_urdu(watched, server, people, tmp_path):
    _, child, _ = people
    v = watched(width=360, height=740, lang="ur")
    v.page.goto(f"{server}/my/login")
    assert v.page.evaluate("() => document.documentElement.dir") == "rtl"
    v.page.locator("#health_id").fill(child["health_id"])
    v.page.locator("#access_code").fill(child["access_code"])
    v.page.locator("main button[type=submit]").click()
    v.page.wait_for_url(f"{server}/my")
    assert child["_input"]["given_name"] in v.page.content() and "BCG" in v.page.content()
    assert "patient.create" in v.page.content()  # the access log
    assert v.page.evaluate("() => document.documentElement.scrollWidth") <= 360
    v.shot(tmp_path, "guardian-urdu")
    v.assert_clean()


def test_auditor_records_a_finding_on_an_emergency_access(watched, server, people, tmp_path):
    w, child, _ = people
    reason = f"patient transferred from another province {w.tag}"
    r = w.client.get(f"/api/v1/patients/{child['id']}", headers=w.h("official_other_province", **{"X-Break-Glass-Reason": reason}))
    assert r.status_code == 200
    v = watched()
    log_in(v, server, w.users["auditor"])
    v.page.get_by_role("link", name="Emergency accesses to review").first.click()
    card = v.page.locator("article", has_text=reason)
    card.wait_for()
    v.shot(tmp_path, "break-glass-review")
    v.assert_clean()
    card.get_by_label("justified", exact=True).check()
    card.get_by_label("Note (optional)").fill("confirmed with the receiving facility")
    card.get_by_role("button", name="Record finding").click()
    v.page.wait_for_url(f"{server}/console/audit/break-glass")
    assert v.page.locator("article", has_text=reason).count() == 0  # no longer pending
    v.page.get_by_role("link", name="Reviewed").click()
    v.page.locator("article", has_text=reason).wait_for()
    v.assert_clean()


def test_clinic_worker_prints_the_due_list(watched, server, people, tmp_path):
    w, child, _ = people
    v = watched()
    log_in(v, server, w.users["clinic_a"])
    v.page.get_by_role("link", name="Due list").first.click()
    v.page.get_by_label("From (date)").fill("2026-07-01")
    v.page.get_by_label("To (date)").fill("2026-07-31")
    v.page.get_by_role("button", name="Show").click()
    v.page.locator("table.list").wait_for()
    assert child["_input"]["given_name"] in v.page.content()
    v.assert_clean()
    v.page.emulate_media(media="print")  # A4: no navigation or forms, a blank "given" column to tick
    assert not v.page.locator("header.top").is_visible() and v.page.locator("th.print-only").is_visible()
    v.shot(tmp_path, "due-list-print")
