"""Changes feed per facility (issue 5): capture scope, cursor paging, amendments, late commits
behind the cursor (the overlap window), and audit with subjects."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select, update

from conftest import audit_events
from registry.immunizations.models import Immunization
from security.audit.models import AuditEventSubjectRow

URL = "/api/v1/sync/changes"


def _download(client, headers, facility, since=None, limit=100):
    """Page until has_more is false; returns (entries, final cursor, pages)."""
    entries, pages = [], 0
    while True:
        params = {"facility": facility, "limit": limit, **({"since": since} if since else {})}
        r = client.get(URL, params=params, headers=headers)
        assert r.status_code == 200, r.json()
        body = r.json()
        entries += body["items"]
        since, pages = body["next_cursor"], pages + 1
        if not body["has_more"]:
            return entries, since, pages


def _dose(client, world, patient_id, **kw):
    body = {"vaccine": "OPV", "dose_number": 0, "date_given": "2026-06-02", **kw}
    r = client.post(f"/api/v1/patients/{patient_id}/immunizations", json=body, headers=world.h("clinic_a"))
    assert r.status_code == 201
    return r.json()


def test_scope_of_the_feed(world, client, runtime):
    fac = world.facilities["a"]
    assert client.get(URL, params={"facility": fac}, headers=world.h("clinic_a")).status_code == 200
    assert client.get(URL, params={"facility": fac}, headers=world.h("official_district")).status_code == 200
    for who, facility in (("clinic_a", world.facilities["a2"]), ("clinic_b", fac), ("official_other_province", fac)):
        rid = uuid.uuid4().hex
        r = client.get(URL, params={"facility": facility}, headers=world.h(who, **{"X-Request-ID": rid}))
        assert r.status_code == 404, who
        [ev] = audit_events(runtime, request_id=rid)
        assert (ev.action, ev.outcome) == ("sync.changes", "denied")
    rid = uuid.uuid4().hex
    unknown = client.get(URL, params={"facility": "F-NOPE-" + world.tag}, headers=world.h("clinic_a", **{"X-Request-ID": rid}))
    assert unknown.status_code == 404 and unknown.json()["detail"] == r.json()["detail"]  # existence does not leak
    assert client.get(URL, params={"facility": fac}, headers=world.h("auditor")).status_code == 403


def test_paging_covers_the_catchment_once_and_amendments_show_up(world, client, runtime):
    fac = world.facilities["a"]
    pats = [world.register() for _ in range(3)]
    elsewhere = world.register("clinic_a2")  # another facility's catchment: never in this feed
    doses = [_dose(client, world, p["id"]) for p in pats]
    entries, cursor, pages = _download(client, world.h("clinic_a"), fac, limit=2)
    assert pages >= 3
    keys = [(e["type"], e["id"], e["version"]) for e in entries]
    assert len(keys) == len(set(keys))
    assert {e["id"] for e in entries if e["type"] == "patient"} == {p["id"] for p in pats}
    assert {e["id"] for e in entries if e["type"] == "immunization"} == {d["id"] for d in doses}
    assert elsewhere["id"] not in {e["id"] for e in entries}
    assert all(e["patient"]["given_name"] == p["given_name"] for e in entries for p in pats if e["id"] == p["id"])

    voided = client.post(f"/api/v1/immunizations/{doses[0]['id']}/void", json={"reason": "wrong child"},
                         headers=world.h("clinic_a", **{"If-Match": '"1"'}))
    assert voided.status_code == 200
    later, _, _ = _download(client, world.h("clinic_a"), fac, since=cursor)
    [v] = [e for e in later if e["type"] == "immunization" and e["id"] == doses[0]["id"] and e["version"] == 2]
    assert v["immunization"]["status"] == "entered-in-error"


def test_a_change_committed_late_is_not_behind_the_cursor(world, client, runtime):
    """A transaction stamps its rows before it commits: a row stamped before the last delivered
    entry may become visible after the download. The final cursor stays `settings.sync.overlap_seconds`
    behind, so the next download still sees it."""
    fac = world.facilities["a"]
    p = world.register()
    d = _dose(client, world, p["id"])
    entries, cursor, _ = _download(client, world.h("clinic_a"), fac)
    last = max(e["changed_at"] for e in entries)
    late = world.register()
    late_dose = _dose(client, world, late["id"])
    from datetime import datetime
    stamped_earlier = datetime.fromisoformat(last.replace("Z", "+00:00")) - timedelta(seconds=1)
    with runtime.sessions.begin() as s:
        s.execute(update(Immunization.__table__).where(Immunization.__table__.c.id == uuid.UUID(late_dose["id"]))
                  .values(updated_at=stamped_earlier))
    again, _, _ = _download(client, world.h("clinic_a"), fac, since=cursor)
    assert late_dose["id"] in {e["id"] for e in again}
    [late_entry] = [e for e in again if e["id"] == late["id"]]  # a patient entry carries its current doses
    assert [x["id"] for x in late_entry["immunizations"]] == [late_dose["id"]]
    assert d["id"] in {e["id"] for e in again}  # the overlap resends recent entries: clients dedupe by (type, id, version)


def test_without_overlap_the_cursor_moves_on(world, client, runtime, monkeypatch):
    monkeypatch.setattr(runtime.settings.sync, "overlap_seconds", 0)
    fac = world.facilities["a"]
    world.register()
    entries, cursor, _ = _download(client, world.h("clinic_a"), fac)
    assert len(entries) == 1
    assert _download(client, world.h("clinic_a"), fac, since=cursor)[0] == []


def test_each_page_is_audited_with_its_patients_as_subjects(world, client, runtime):
    fac = world.facilities["a"]
    pats = [world.register() for _ in range(2)]
    rid = uuid.uuid4().hex
    r = client.get(URL, params={"facility": fac}, headers=world.h("clinic_a", **{"X-Request-ID": rid}))
    assert r.status_code == 200
    [ev] = audit_events(runtime, request_id=rid)
    assert (ev.action, ev.outcome, ev.detail["count"]) == ("sync.changes", "success", 2)
    t = AuditEventSubjectRow.__table__
    with runtime.sessions() as s:
        subjects = {str(x) for x in s.execute(select(t.c.patient_id).where(t.c.event_id == ev.id)).scalars()}
    assert subjects == {p["id"] for p in pats}


def test_a_tampered_cursor_is_422(world, client):
    r = client.get(URL, params={"facility": world.facilities["a"], "since": "bm90LWEtY3Vyc29y"}, headers=world.h("clinic_a"))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "since"


def test_ties_on_the_change_position_are_paged_exactly_once(world, client, runtime, monkeypatch):
    """Rows stamped in the same microsecond (patients and doses alike) are ordered by kind and
    id, so a page boundary inside a tie neither repeats nor skips a row."""
    from datetime import UTC, datetime

    from registry.patients.models import Patient

    monkeypatch.setattr(runtime.settings.sync, "overlap_seconds", 0)
    fac = world.facilities["a"]
    pats = [world.register() for _ in range(3)]
    doses = [_dose(client, world, p["id"]) for p in pats]
    same = datetime(2026, 11, 1, 12, 0, 0, 123456, tzinfo=UTC)
    with runtime.sessions.begin() as s:
        s.execute(update(Patient.__table__).where(Patient.__table__.c.id.in_([uuid.UUID(p["id"]) for p in pats]))
                  .values(updated_at=same))
        s.execute(update(Immunization.__table__).where(Immunization.__table__.c.id.in_([uuid.UUID(d["id"]) for d in doses]))
                  .values(updated_at=same))
    entries, _, pages = _download(client, world.h("clinic_a"), fac, limit=1)
    assert pages == 6
    assert sorted(e["id"] for e in entries) == sorted([p["id"] for p in pats] + [d["id"] for d in doses])
