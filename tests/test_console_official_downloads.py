"""The official's downloads on the coverage page (issue 14): the DHIS2 dataValueSets JSON comes from
the same service as `GET /api/v1/reports/coverage/export?format=dhis2`, with the same body, the same
`report.export` event and the same 404 outside scope."""

from __future__ import annotations

import uuid

from conftest import audit_events
from console_helpers import signed_in


def _events(runtime, rid):
    return [(e.action, e.outcome) for e in audit_events(runtime, request_id=rid)]


def test_official_downloads_the_dhis2_data_value_set_of_the_coverage_page(app, runtime, shared_world):
    w = shared_world
    for _ in range(6):  # enough children in one district for unsuppressed cells
        child = w.register("clinic_a")
        r = w.client.post(f"/api/v1/patients/{child['id']}/immunizations", headers=w.h("clinic_a"),
                          json={"vaccine": "BCG", "dose_number": 1, "date_given": child["_input"]["birth_date"]})
        assert r.status_code == 201, r.json()
    cohort = child["_input"]["birth_date"][:4]
    mapping = {"jurisdiction": "PK-PB", "measure": "any", "data_elements": {"BCG-1": {"dataElement": "s46m5MS0hxu"}},
               "org_units": {"PK-PB": "PbProvUnit1", "PK-PB-LAH": "LahDistUnit"}}
    r = w.client.put("/api/v1/reports/dhis2-mapping", json=mapping, headers=w.h("official_province"))
    assert r.status_code == 200, r.json()
    c, csrf = signed_in(app, w.users["official_province"])
    page = c.post("/console/coverage", data={"csrf": csrf, "cohort": cohort})
    assert page.status_code == 200 and 'name="format" value="dhis2"' in page.text
    rid = uuid.uuid4().hex
    r = c.post("/console/coverage/export", data={"csrf": csrf, "cohort": cohort, "jurisdiction": "PK-PB", "format": "dhis2"},
               headers={"X-Request-ID": rid})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.headers["content-disposition"] == f'attachment; filename="coverage-{cohort}-dhis2.json"'
    assert r.headers["cache-control"] == "no-store"
    assert _events(runtime, rid) == [("report.export", "success")]
    api = w.client.get("/api/v1/reports/coverage/export", params={"cohort": cohort, "jurisdiction": "PK-PB", "format": "dhis2"},
                       headers=w.h("official_province"))
    assert api.status_code == 200 and r.json() == api.json()
    values = {(v["orgUnit"], v["dataElement"]) for v in r.json()["dataValues"]}
    assert ("LahDistUnit", "s46m5MS0hxu") in values and all(v["period"] == cohort for v in r.json()["dataValues"])
    rid = uuid.uuid4().hex  # another province answers 404 and is audited as denied, as in the API
    r = c.post("/console/coverage/export", data={"csrf": csrf, "cohort": cohort, "jurisdiction": "PK-SD", "format": "dhis2"},
               headers={"X-Request-ID": rid})
    assert r.status_code == 404 and _events(runtime, rid) == [("report.export", "denied")]
    rid = uuid.uuid4().hex
    r = c.post("/console/coverage/export", data={"csrf": csrf, "cohort": cohort, "format": "xml"}, headers={"X-Request-ID": rid})
    assert r.status_code == 422 and "format" in r.text
    rid = uuid.uuid4().hex  # without the session's CSRF token: refused and audited, nothing exported
    r = c.post("/console/coverage/export", data={"cohort": cohort, "format": "dhis2"}, headers={"X-Request-ID": rid})
    assert r.status_code == 403 and "dataValues" not in r.text and _events(runtime, rid) == [("console.csrf", "denied")]
