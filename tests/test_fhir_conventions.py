"""FHIR conventions standard clients rely on (issue 18): content negotiation (406, 415), `_count=0`,
`_summary=count` and `_total`, absolute `fullUrl` in Bundle responses, a `Location` that
resolves (vread), an absolute `implementation.url`. Refusals are OperationOutcomes naming the
parameter, and refusals behind a gate are audited once."""

from __future__ import annotations

import secrets
import uuid
from datetime import date, timedelta

import pytest
from conftest import audit_events
from test_fhir_api import _create, _dose, _patient
from test_fhir_bundles import _bundle, _entry

from registry.fhir import codes

FHIR = "application/fhir+json"
BASE = "http://testserver/fhir/R4"


def _events(runtime, r) -> list:
    return audit_events(runtime, request_id=r.headers["X-Request-ID"])


def _refused(r, status: int, expression: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(FHIR)
    [issue] = r.json()["issue"]
    assert r.json()["resourceType"] == "OperationOutcome" and issue["expression"] == [expression]
    assert issue["code"] in ("not-supported", "structure", "invalid") and issue["diagnostics"]


# --- 406 and 415 -----------------------------------------------------------------------------------

NOT_ACCEPTABLE = [({"_format": "xml"}, {}, "_format"), ({"_format": "application/fhir+xml"}, {}, "_format"),
                  ({"_format": "ttl"}, {}, "_format"), ({"_format": "application/fhir+json;fhirVersion=3.0"}, {}, "_format"),
                  ({}, {"Accept": "application/fhir+xml"}, "Accept"), ({}, {"Accept": "text/html"}, "Accept"),
                  ({}, {"Accept": "application/fhir+json;q=0, application/json;q=0"}, "Accept"),
                  ({}, {"Accept": "application/fhir+json; fhirVersion=3.0"}, "Accept"),
                  ({"_format": "xml"}, {"Accept": "application/fhir+json"}, "_format")]


@pytest.mark.parametrize("params,headers,where", NOT_ACCEPTABLE)
def test_an_unsupported_format_or_accept_is_406_on_metadata(client, params, headers, where):
    _refused(client.get("/fhir/R4/metadata", params=params, headers=headers), 406, where)


@pytest.mark.parametrize("params,headers,where", NOT_ACCEPTABLE[:2] + NOT_ACCEPTABLE[4:6])
def test_an_unsupported_format_or_accept_is_an_audited_406_on_reads_and_searches(world, runtime, params, headers, where):
    pid = _create(world)["id"]
    c = world.client
    for r, action in ((c.get(f"/fhir/R4/Patient/{pid}", params=params, headers=world.h("clinic_a", **headers)), "patient.read"),
                      (c.get("/fhir/R4/Patient", params=params, headers=world.h("clinic_a", **headers)), "patient.search"),
                      (c.get("/fhir/R4/Immunization", params={**params, "patient": pid}, headers=world.h("clinic_a", **headers)),
                       "immunization.list")):
        _refused(r, 406, where)
        [ev] = _events(runtime, r)
        assert (ev.action, ev.outcome) == (action, "invalid")


def test_a_format_in_a_search_form_body_is_checked_too(world):
    r = world.client.post("/fhir/R4/Patient/_search", data={"_format": "xml", "gender": "female"}, headers=world.h("clinic_a"))
    _refused(r, 406, "_format")


@pytest.mark.parametrize("params,headers,served", [
    ({}, {}, FHIR), ({}, {"Accept": "*/*"}, FHIR), ({}, {"Accept": "application/*"}, FHIR),
    ({}, {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}, FHIR),
    ({}, {"Accept": "application/fhir+json; fhirVersion=4.0"}, FHIR), ({}, {"Accept": "application/json"}, "application/json"),
    ({}, {"Accept": "application/fhir+json;q=0.5, application/json"}, "application/json"),
    ({"_format": "json"}, {}, FHIR), ({"_format": "application/fhir+json"}, {"Accept": "text/html"}, FHIR),
    ({"_format": "application/json"}, {}, "application/json")])
def test_json_is_served_whatever_way_it_is_asked_for(client, params, headers, served):
    r = client.get("/fhir/R4/metadata", params=params, headers=headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith(served)


UNSUPPORTED_BODIES = ["application/xml", "application/fhir+xml", "text/plain", "application/json; charset=latin-1",
                      "application/fhir+json; fhirVersion=3.0", "multipart/form-data; boundary=x"]


@pytest.mark.parametrize("ctype", UNSUPPORTED_BODIES)
def test_an_unsupported_body_media_type_is_an_audited_415_and_writes_nothing(world, runtime, ctype):
    import json

    c = world.client
    bform = _patient()["identifier"][0]["value"]
    body = json.dumps(_patient(identifier=[{"system": codes.SID_BFORM, "value": bform}]))
    r = c.post("/fhir/R4/Patient", content=body, headers=world.h("clinic_a", **{"Content-Type": ctype}))
    _refused(r, 415, "Content-Type")
    [ev] = _events(runtime, r)
    assert (ev.action, ev.outcome) == ("patient.create", "invalid")
    found = c.get("/fhir/R4/Patient", params={"identifier": f"{codes.SID_BFORM}|{bform}"}, headers=world.h("clinic_a"))
    assert found.json()["total"] == 0
    bundle = json.dumps(_bundle("transaction", _entry(_patient())))
    _refused(c.post("/fhir/R4", content=bundle, headers=world.h("clinic_a", **{"Content-Type": ctype})), 415, "Content-Type")
    dose = json.dumps(_dose(f"Patient/{uuid.uuid4()}"))
    _refused(c.post("/fhir/R4/Immunization", content=dose, headers=world.h("clinic_a", **{"Content-Type": ctype})),
             415, "Content-Type")


def test_search_forms_must_be_form_encoded(world):
    c = world.client
    r = c.post("/fhir/R4/Patient/_search", content=b'{"gender": "female"}', headers=world.h("clinic_a", **{"Content-Type": "application/json"}))
    _refused(r, 415, "Content-Type")
    ok = c.post("/fhir/R4/Immunization/_search", data={"status": "completed"}, headers=world.h("clinic_a"))
    assert ok.status_code == 200


def test_fhir_json_with_charset_and_version_is_read(world):
    import json

    r = world.client.post("/fhir/R4/Patient", content=json.dumps(_patient()),
                          headers=world.h("clinic_a", **{"Content-Type": "application/fhir+json; charset=UTF-8; fhirVersion=4.0"}))
    assert r.status_code == 201, r.text


# --- _count=0, _summary=count, _total --------------------------------------------------------------

def _born_on(world, day: str, n: int) -> list[str]:
    return [_create(world, birthDate=day)["id"] for _ in range(n)]


def _unique_day() -> str:
    return (date(2020, 1, 1) + timedelta(days=secrets.randbelow(5 * 365))).isoformat()


def _all_pages(world, params: dict) -> list[str]:
    out, url, query = [], "/fhir/R4/Patient", dict(params)
    while url:
        page = world.client.get(url, params=query, headers=world.h("clinic_a")).json()
        out += [e["resource"]["id"] for e in page.get("entry", [])]
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        url, query = (nxt[0].split("testserver", 1)[1], None) if nxt else (None, None)
    return out


@pytest.mark.parametrize("only_total", [{"_count": "0"}, {"_summary": "count"}])
def test_count_zero_and_summary_count_return_only_the_total(world, runtime, only_total):
    c, day = world.client, _unique_day()
    ids = _born_on(world, day, 3)
    listing = c.get("/fhir/R4/Patient", params={"birthdate": day, **only_total}, headers=world.h("clinic_a"))
    body = listing.json()
    assert listing.status_code == 200 and body["type"] == "searchset" and "entry" not in body
    assert body["total"] == len(_all_pages(world, {"birthdate": day, "_count": "2"})) >= 3
    [ev] = _events(runtime, listing)
    assert (ev.action, ev.outcome, ev.detail["count"], ev.detail["total"]) == ("patient.list", "success", 0, body["total"])

    created = c.get(f"/fhir/R4/Patient/{ids[0]}", headers=world.h("clinic_a")).json()
    bform = next(i["value"] for i in created["identifier"] if i["system"] == codes.SID_BFORM)
    by_id = c.get("/fhir/R4/Patient", params={"identifier": f"{codes.SID_BFORM}|{bform}", **only_total},
                  headers=world.h("clinic_a")).json()
    assert by_id["total"] == 1 and "entry" not in by_id
    for vaccine, n, when in (("BCG", 1, day), ("OPV", 0, day)):
        assert c.post("/fhir/R4/Immunization", json=_dose(f"Patient/{ids[0]}", vaccine, n, when),
                      headers=world.h("clinic_a")).status_code == 201
    doses = c.get("/fhir/R4/Immunization", params={"patient": ids[0], **only_total}, headers=world.h("clinic_a")).json()
    assert doses["total"] == 2 and "entry" not in doses
    listed = c.get("/fhir/R4/Immunization", params={"date": day, **only_total}, headers=world.h("clinic_a")).json()
    assert listed["total"] >= 2 and "entry" not in listed
    rec = c.get("/fhir/R4/ImmunizationRecommendation", params={"patient": ids[0], **only_total}, headers=world.h("clinic_a")).json()
    assert rec["total"] == 1 and "entry" not in rec


def test_total_is_honoured(world):
    c, day = world.client, _unique_day()
    _born_on(world, day, 3)
    everyone = len(_all_pages(world, {"birthdate": day}))
    default = c.get("/fhir/R4/Patient", params={"birthdate": day, "_count": "1"}, headers=world.h("clinic_a")).json()
    assert "total" not in default  # not free for a capture-scope list: given when asked for
    for mode in ("accurate", "estimate"):
        page = c.get("/fhir/R4/Patient", params={"birthdate": day, "_count": "1", "_total": mode}, headers=world.h("clinic_a")).json()
        assert page["total"] == everyone and len(page["entry"]) == 1
        assert any("_total=" + mode in link["url"] for link in page["link"] if link["relation"] == "next")
    pid = default["entry"][0]["resource"]["id"]
    assert c.get("/fhir/R4/Immunization", params={"patient": pid}, headers=world.h("clinic_a")).json()["total"] == 0
    none = c.get("/fhir/R4/Immunization", params={"patient": pid, "_total": "none"}, headers=world.h("clinic_a")).json()
    assert "total" not in none


@pytest.mark.parametrize("params,where", [({"_total": "exact"}, "_total"), ({"_summary": "true"}, "_summary"),
                                          ({"_summary": "text"}, "_summary"), ({"_count": "-1"}, "_count"),
                                          ({"_count": "ten"}, "_count"), ({"_pretty": "yes"}, "_pretty")])
def test_unsupported_result_parameters_are_refused_naming_them(world, runtime, params, where):
    r = world.client.get("/fhir/R4/Patient", params={"gender": "female", **params}, headers=world.h("clinic_a"))
    _refused(r, 400, where)
    assert [e.outcome for e in _events(runtime, r)] == ["invalid"]


# --- absolute URLs that resolve --------------------------------------------------------------------

def test_location_of_a_create_resolves_by_vread(world, runtime):
    c = world.client
    r = c.post("/fhir/R4/Patient", json=_patient(), headers=world.h("clinic_a", **{"Content-Type": FHIR}))
    location = r.headers["Location"]
    assert location.startswith(BASE + "/Patient/") and "/_history/" in location
    got = c.get(location.split("testserver", 1)[1], headers=world.h("clinic_a"))
    assert got.status_code == 200 and got.json() == {k: v for k, v in r.json().items() if k != "extension"}
    assert got.headers["ETag"] == r.headers["ETag"]
    [ev] = _events(runtime, got)
    assert (ev.action, ev.outcome) == ("patient.read", "success")

    dose = c.post("/fhir/R4/Immunization", json=_dose(f"Patient/{r.json()['id']}"), headers=world.h("clinic_a"))
    got = c.get(dose.headers["Location"].split("testserver", 1)[1], headers=world.h("clinic_a"))
    assert got.status_code == 200 and got.json()["id"] == dose.json()["id"]


def test_vread_of_another_version_or_outside_scope_is_404(world, runtime):
    c = world.client
    res = _create(world)
    current = res["meta"]["versionId"]
    r = c.get(f"/fhir/R4/Patient/{res['id']}/_history/{int(current) + 1}", headers=world.h("clinic_a"))
    assert r.status_code == 404 and r.json()["resourceType"] == "OperationOutcome"
    [ev] = _events(runtime, r)
    assert (ev.action, ev.outcome) == ("patient.read", "not_found")
    outside = c.get(f"/fhir/R4/Patient/{res['id']}/_history/{current}", headers=world.h("clinic_c"))
    read = c.get(f"/fhir/R4/Patient/{res['id']}", headers=world.h("clinic_c"))
    assert outside.status_code == read.status_code == 404 and outside.json() == read.json()


@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_bundle_responses_carry_absolute_full_urls_and_locations_that_resolve(world, kind):
    c = world.client
    ref = f"urn:uuid:{uuid.uuid4()}"
    r = c.post("/fhir/R4", json=_bundle(kind, _entry(_patient(), ref), _entry(_dose(ref, "BCG", 1, "2026-06-02"))),
               headers=world.h("clinic_a"))
    assert r.status_code == 200, r.json()
    for entry in r.json()["entry"]:
        res = entry["resource"]
        assert entry["fullUrl"] == f"{BASE}/{res['resourceType']}/{res['id']}"
        assert c.get(entry["fullUrl"].split("testserver", 1)[1], headers=world.h("clinic_a")).json()["id"] == res["id"]
        vread = c.get(f"/fhir/R4/{entry['response']['location']}", headers=world.h("clinic_a"))
        assert vread.status_code == 200 and vread.json()["id"] == res["id"]


def test_capability_statement_states_an_absolute_url_and_vread(client):
    cs = client.get("/fhir/R4/metadata").json()
    assert cs["implementation"]["url"] == BASE
    for res in cs["rest"][0]["resource"][:2]:
        assert {"read", "vread"} <= {i["code"] for i in res["interaction"]} and res["readHistory"] is False
