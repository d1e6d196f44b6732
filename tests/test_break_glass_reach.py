"""Break-glass reach, route family by route family (issue 18; README "Roles and scopes").

An official of another province, with an emergency reason, against a child registered in Lahore:
- it OPENS the reads of one patient named by id: the record, its doses, its schedule, its
  adverse-event reports, and the same through FHIR (Patient, Immunization and
  ImmunizationRecommendation by id, and their searches by `patient`). Without the reason each of
  these answers 404.
- it opens NOTHING else: every write (update, record a dose, report an adverse event, issue a
  certificate, issue an access code), every list, search and aggregate (patient list and search,
  due lists, adverse-event lists and counts, the sync feed, coverage reports, FHIR searches)
  answers exactly as without the reason, and never shows the child.
"""

from __future__ import annotations

import pytest

from conftest import audit_events

EMERGENCY = {"X-Break-Glass-Reason": "unconscious child at Karachi civil hospital"}
READER = "official_other_province"


@pytest.fixture(scope="module")
def case(shared_world):
    w = shared_world
    child = w.register("clinic_a", birth_date="2026-06-01")
    dose = w.client.post(f"/api/v1/patients/{child['id']}/immunizations", headers=w.h("clinic_a"),
                         json={"vaccine": "PENTA", "dose_number": 1, "date_given": "2026-07-13", "lot_number": "BGLOT1"}).json()
    report = {"onset_date": "2026-07-14", "symptoms": ["fever"], "seriousness": "non_serious", "outcome": "recovered"}
    r = w.client.post(f"/api/v1/immunizations/{dose['id']}/adverse-events", json=report, headers=w.h("clinic_a"))
    assert r.status_code == 201
    return w, child, dose


OPENED = {
    "patient": lambda c, d: f"/api/v1/patients/{c['id']}",
    "doses": lambda c, d: f"/api/v1/patients/{c['id']}/immunizations",
    "schedule": lambda c, d: f"/api/v1/patients/{c['id']}/schedule",
    "adverse events of the patient": lambda c, d: f"/api/v1/patients/{c['id']}/adverse-events",
    "FHIR Patient": lambda c, d: f"/fhir/R4/Patient/{c['id']}",
    "FHIR Immunization": lambda c, d: f"/fhir/R4/Immunization/{d['id']}",
    "FHIR ImmunizationRecommendation": lambda c, d: f"/fhir/R4/ImmunizationRecommendation/{c['id']}",
    "FHIR Immunization search by patient": lambda c, d: f"/fhir/R4/Immunization?patient={c['id']}",
    "FHIR ImmunizationRecommendation search by patient": lambda c, d: f"/fhir/R4/ImmunizationRecommendation?patient={c['id']}",
}


@pytest.mark.parametrize("family", OPENED)
def test_break_glass_opens_the_reads_of_one_patient(case, family):
    w, child, dose = case
    url = OPENED[family](child, dose)
    assert w.client.get(url, headers=w.h(READER)).status_code == 404
    r = w.client.get(url, headers=w.h(READER, **EMERGENCY))
    assert r.status_code == 200, family
    [ev] = audit_events(w.runtime, request_id=r.headers["X-Request-ID"])
    assert ev.break_glass and ev.purpose_of_use == "ETREAT" and ev.outcome == "success"


def _not_opened(child, dose, w):
    """(family, method, url, request kwargs): answers that must not change with a break-glass reason."""
    fac = w.facilities["a"]
    pid = child["id"]
    return [
        ("update the patient", "PATCH", f"/api/v1/patients/{pid}", {"json": {"address": "elsewhere"}, "headers": {"If-Match": '"1"'}}),
        ("record a dose", "POST", f"/api/v1/patients/{pid}/immunizations",
         {"json": {"vaccine": "OPV", "dose_number": 1, "date_given": "2026-07-13"}}),
        ("void a dose", "POST", f"/api/v1/immunizations/{dose['id']}/void", {"json": {"reason": "test"}, "headers": {"If-Match": '"1"'}}),
        ("report an adverse event", "POST", f"/api/v1/immunizations/{dose['id']}/adverse-events",
         {"json": {"onset_date": "2026-07-14", "symptoms": ["fever"], "seriousness": "non_serious", "outcome": "recovered"}}),
        ("issue a certificate", "GET", f"/api/v1/patients/{pid}/certificate", {}),
        ("issue an access code", "POST", f"/api/v1/patients/{pid}/access-code", {}),
        ("list patients", "GET", "/api/v1/patients", {}),
        ("search by identifier", "POST", "/api/v1/patients/search", {"json": {"system": "bform", "value": child["_input"]["bform"]}}),
        ("facility due list", "GET", f"/api/v1/facilities/{fac}/due-list", {}),
        ("adverse-event list", "GET", "/api/v1/adverse-events", {"params": {"lot_number": "BGLOT1"}}),
        ("adverse-event counts", "GET", "/api/v1/adverse-events/counts", {"params": {"lot_number": "BGLOT1"}}),
        ("sync feed", "GET", "/api/v1/sync/changes", {"params": {"facility": fac}}),
        ("coverage report", "GET", "/api/v1/reports/coverage", {"params": {"jurisdiction": "PK-PB-LAH", "cohort": "2026"}}),
        ("FHIR Patient search", "GET", "/fhir/R4/Patient", {"params": {"identifier": child["_input"]["bform"]}}),
        ("FHIR Immunization search by lot", "GET", "/fhir/R4/Immunization", {"params": {"lot-number": "BGLOT1"}}),
    ]


def test_break_glass_opens_nothing_else(case):
    w, child, dose = case
    for family, method, url, kw in _not_opened(child, dose, w):
        extra = kw.pop("headers", {})
        plain = w.client.request(method, url, headers=w.h(READER, **extra), **kw)
        urgent = w.client.request(method, url, headers=w.h(READER, **extra, **EMERGENCY), **kw)
        assert urgent.status_code == plain.status_code, f"{family}: {plain.status_code} became {urgent.status_code}"
        assert urgent.status_code not in (200, 201) or (child["id"] not in urgent.text and dose["id"] not in urgent.text), \
            f"{family}: the child showed up"
        if urgent.status_code == 200 and family.startswith("adverse-event"):
            assert urgent.json().get("items", urgent.json()) in ([], {"items": []}) or "BGLOT1" not in urgent.text, family
