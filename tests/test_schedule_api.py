"""GET /api/v1/patients/{id}/schedule through HTTP: the reach of the dose list, one audit event
per request with no clinical data, and a province's own schedule overriding the country's."""

from __future__ import annotations

import json
import uuid

from conftest import audit_events
from registry.schedules import service
from registry.schedules.models import ScheduleRow


def _dose(world, pid, vaccine, n, when, who="clinic_a", override=None):
    body = {"vaccine": vaccine, "dose_number": n, "date_given": when, **({"override_reason": override} if override else {})}
    r = world.client.post(f"/api/v1/patients/{pid}/immunizations", json=body, headers=world.h(who))
    assert r.status_code == 201, r.json()


def _one_event(runtime, r):
    events = audit_events(runtime, request_id=r.headers["X-Request-ID"])
    assert len(events) == 1, [(e.action, e.outcome) for e in events]
    return events[0]


def test_schedule_of_a_child(world, runtime):
    c = world.client
    pid = world.register("clinic_a", birth_date="2026-06-01")["id"]
    _dose(world, pid, "BCG", 1, "2026-06-01")
    # 30 days: too early for age, so recording it needs an override (test_dose_validation.py)
    _dose(world, pid, "PENTA", 1, "2026-07-01", override="mother insisted, travelling abroad")
    r = c.get(f"/api/v1/patients/{pid}/schedule?as_of=2026-07-20", headers=world.h("clinic_a"))
    assert r.status_code == 200, r.json()
    body = r.json()
    assert body["schedule"]["code"] == "pk-epi" and body["as_of"] == "2026-07-20"
    judged = {(d["vaccine"], d["dose_number"]): (d["status"], d["reason"]) for d in body["doses"]}
    assert judged == {("BCG", 1): ("valid", None), ("PENTA", 1): ("invalid", "too_early_for_age")}
    upcoming = {(f["vaccine"], f["dose_number"]): f for f in body["forecast"]}
    assert ("BCG", 1) not in upcoming
    assert upcoming[("OPV", 0)]["status"] == "not_applicable"
    assert (upcoming[("PENTA", 1)]["status"], upcoming[("PENTA", 1)]["earliest"]) == ("due", "2026-07-13")
    ev = _one_event(runtime, r)
    assert (ev.action, ev.outcome, ev.actor_username) == ("immunization.schedule", "success", world.users["clinic_a"])
    detail = json.dumps(ev.detail) if not isinstance(ev.detail, str) else ev.detail
    for clinical in ("BCG", "PENTA", "2026-06-01", "too_early"):
        assert clinical not in detail


def test_scope_is_the_dose_list_scope(world, runtime):
    c = world.client
    pid = world.register("clinic_a")["id"]
    url = f"/api/v1/patients/{pid}/schedule"
    r = c.get(url, headers=world.h("official_other_province"))
    assert r.status_code == 404
    assert (_one_event(runtime, r).action, _one_event(runtime, r).outcome) == ("immunization.schedule", "denied")
    # the dose list answers the same
    assert c.get(f"/api/v1/patients/{pid}/immunizations", headers=world.h("official_other_province")).status_code == 404
    r = c.get(url, headers=world.h("official_other_province", **{"X-Break-Glass-Reason": "unconscious child at DHQ emergency"}))
    assert r.status_code == 200
    ev = _one_event(runtime, r)
    assert (ev.outcome, ev.break_glass, ev.outside_capture_scope) == ("success", True, True)
    r = c.get(f"/api/v1/patients/{uuid.uuid4()}/schedule", headers=world.h("clinic_a"))
    assert r.status_code == 404 and _one_event(runtime, r).outcome == "not_found"
    for who in ("official_district", "clinic_a2", "clinic_c"):  # clinic_c: a visiting child (search scope)
        r = c.get(url, headers=world.h(who))
        assert r.status_code == 200 and _one_event(runtime, r).outcome == "success"
    r = c.get(url, headers=world.h("auditor"))  # no immunization:read
    assert r.status_code == 403 and _one_event(runtime, r).outcome == "denied"
    r = c.get(url + "?as_of=not-a-date", headers=world.h("clinic_a"))
    assert r.status_code == 422 and _one_event(runtime, r).outcome == "invalid"


def test_a_province_schedule_overrides_the_country_one(world, runtime, tmp_path):
    """A province loads its own version (here: Rota-1 only from 8 weeks) effective from a date;
    Punjab's children use it from then on (the row is removed afterwards), Sindh's keep the country's."""
    doc = json.loads(service.DEFAULT_FILE.read_text())
    doc["version"] = f"2026.pb-{uuid.uuid4().hex[:8]}"
    doc["effective_from"] = "2026-08-01"
    rota = next(s for s in doc["series"] if s["id"] == "ROTA")
    rota["doses"][0]["min_age"] = rota["doses"][0]["recommended_age"] = "8w"
    path = tmp_path / "pb.json"
    path.write_text(json.dumps(doc))
    with runtime.sessions.begin() as s:
        row, added = service.load(s, service.read_file(path), "PK-PB")
        assert added and row.jurisdiction_code == "PK-PB"
        assert service.load(s, service.read_file(path), "PK-PB")[1] is False  # idempotent
    try:
        c = world.client
        punjab = world.register("clinic_a", birth_date="2026-07-01")["id"]
        sindh = world.register("clinic_c", birth_date="2026-07-01")["id"]

        def rota1(pid, who, as_of):
            body = c.get(f"/api/v1/patients/{pid}/schedule?as_of={as_of}", headers=world.h(who)).json()
            return body["schedule"], next(f for f in body["forecast"] if (f["vaccine"], f["dose_number"]) == ("ROTA", 1))

        sched, f = rota1(punjab, "clinic_a", "2026-08-20")
        assert (sched["jurisdiction"], sched["version"], f["earliest"]) == ("PK-PB", doc["version"], "2026-08-26")
        sched, f = rota1(punjab, "clinic_a", "2026-07-20")  # before it takes effect: the country's
        assert (sched["jurisdiction"], f["earliest"]) == ("PK", "2026-08-12")
        sched, f = rota1(sindh, "clinic_c", "2026-08-20")
        assert (sched["jurisdiction"], f["earliest"]) == ("PK", "2026-08-12")
    finally:
        with runtime.sessions.begin() as s:
            s.query(ScheduleRow).filter(ScheduleRow.version == doc["version"]).delete()


def test_cli_loads_a_schedule(runtime, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cli.main import app
    from registry.settings import get_settings

    for k, v in {"NHR_DATABASE_URL": runtime.settings.database_url, "NHR_KEY_DIR": str(runtime.settings.key_dir),
                 "NHR_ENV": "test"}.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    doc = json.loads(service.DEFAULT_FILE.read_text())
    doc["version"] = f"cli-{uuid.uuid4().hex[:8]}"
    doc["effective_from"] = "2099-01-01"
    path = tmp_path / "s.json"
    path.write_text(json.dumps(doc))
    runner = CliRunner()
    try:
        r = runner.invoke(app, ["schedules", "load", str(path), "--jurisdiction", "PK-SD"])
        assert r.exit_code == 0, r.output
        assert "loaded" in r.output and "PK-SD" in r.output
        r = runner.invoke(app, ["schedules", "load", str(path), "--jurisdiction", "PK-SD-KRC"])
        assert r.exit_code == 1 and "refused" in r.output
    finally:
        get_settings.cache_clear()
        with runtime.sessions.begin() as s:
            s.query(ScheduleRow).filter(ScheduleRow.version == doc["version"]).delete()
