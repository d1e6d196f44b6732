"""Vaccination certificates through the API and CLI: issue (audited, scoped), verify (public),
revoke (audited), trust list, and the CLI's offline verification."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import audit_events

from registry.certificates import service
from security.certificates import hcert, schema


def rid() -> str:
    return uuid.uuid4().hex


@pytest.fixture(scope="module")
def child(shared_world):
    w = shared_world
    p = w.register("clinic_a", birth_date="2026-06-01")
    for vaccine, n, day in (("OPV", 0, "2026-06-01"), ("BCG", 1, "2026-06-01"), ("OPV", 1, "2026-07-13"),
                            ("PENTA", 1, "2026-07-13"), ("OPV", 2, "2026-08-10")):
        r = w.client.post(f"/api/v1/patients/{p['id']}/immunizations", headers=w.h("clinic_a"),
                          json={"vaccine": vaccine, "dose_number": n, "date_given": day})
        assert r.status_code == 201, r.json()
    return p


def issue(w, who, pid, **params):
    request_id = rid()
    r = w.client.get(f"/api/v1/patients/{pid}/certificate", params=params, headers=w.h(who, **{"X-Request-ID": request_id}))
    return r, request_id


def verify(w, text):
    return w.client.post("/api/v1/certificates/verify", json={"hc1": text})


def test_issue_verify_round_trip_with_one_audit_event(shared_world, runtime, child):
    w = shared_world
    r, request_id = issue(w, "clinic_a", child["id"])
    assert r.status_code == 200, r.json()
    body = r.json()
    assert body["hc1"].startswith("HC1:") and body["disease"] == "polio"
    assert r.headers["cache-control"] == "no-store"
    [ev] = audit_events(runtime, request_id=request_id)
    assert (ev.action, ev.outcome, ev.resource_type, ev.resource_id) == ("certificate.issue", "success", "Certificate", body["uvci"])
    assert str(ev.patient_id) == child["id"]
    flat = json.dumps(ev.detail)
    for secret in (child["_input"]["given_name"], child["_input"]["family_name"], "2026-06-01"):
        assert secret not in flat

    assert schema.problems(hcert.decode(body["hc1"]).dcc) == []  # our own certificates pass the EU DCC schema
    v = verify(w, body["hc1"]).json()
    assert v["valid"] is True and v["error"] is None and v["issuer"] == "PK"
    dcc = v["certificate"]
    assert dcc["nam"]["gn"] == child["_input"]["given_name"] and dcc["nam"]["fnt"] == "".join(
        c for c in child["_input"]["family_name"].upper() if c.isalpha())  # ICAO 9303: A-Z and < only
    assert dcc["dob"] == "2026-06-01"
    [entry] = dcc["v"]
    # the latest completed polio dose: OPV-2, the third dose of a five-dose series counted from OPV-0
    assert (entry["tg"], entry["vp"], entry["dn"], entry["sd"], entry["dt"], entry["co"], entry["ci"]) == \
        ("398102009", "J07BF04", 3, 5, "2026-08-10", "PK", body["uvci"])


def test_each_issue_has_a_unique_uvci_and_other_diseases(shared_world, child):
    w = shared_world
    a, _ = issue(w, "clinic_a", child["id"])
    b, _ = issue(w, "official_district", child["id"], disease="tuberculosis")
    assert a.status_code == b.status_code == 200
    assert a.json()["uvci"] != b.json()["uvci"]
    entry = verify(w, b.json()["hc1"]).json()["certificate"]["v"][0]
    assert (entry["tg"], entry["vp"], entry["dn"], entry["sd"]) == ("56717001", "J07AN01", 1, 1)


@pytest.mark.parametrize("fmt,ctype,magic", [("png", "image/png", b"\x89PNG"), ("svg", "image/svg+xml", b"<svg"),
                                             ("html", "text/html", b"<!DOCTYPE html>")])
def test_formats(shared_world, child, fmt, ctype, magic):
    r, _ = issue(shared_world, "clinic_a", child["id"], format=fmt)
    assert r.status_code == 200 and r.headers["content-type"].startswith(ctype)
    assert r.content.lstrip().startswith(magic)
    if fmt == "html":
        assert b"<svg" in r.content and child["_input"]["given_name"].encode() in r.content and b"URN:UVCI:01:PK:" in r.content


@pytest.mark.parametrize("params,status", [({"disease": "smallpox"}, 422), ({"disease": "measles"}, 422), ({"format": "pdf"}, 422)])
def test_refusals_are_audited_once(shared_world, runtime, child, params, status):
    r, request_id = issue(shared_world, "clinic_a", child["id"], **params)
    assert r.status_code == status
    [ev] = audit_events(runtime, request_id=request_id)
    assert ev.action == "certificate.issue" and ev.outcome == "invalid"


@pytest.mark.parametrize("who,status,outcome", [("clinic_c", 404, "denied"), ("official_other_district", 404, "denied"),
                                                ("clinic_b", 404, "denied"), ("auditor", 403, "denied"), ("admin", 403, "denied")])
def test_scope_and_roles(shared_world, runtime, child, who, status, outcome):
    r, request_id = issue(shared_world, who, child["id"])
    assert r.status_code == status
    [ev] = audit_events(runtime, request_id=request_id)
    assert ev.action == "certificate.issue" and ev.outcome == outcome


def test_unknown_patient_is_404(shared_world, runtime):
    r, request_id = issue(shared_world, "clinic_a", str(uuid.uuid4()))
    assert r.status_code == 404
    [ev] = audit_events(runtime, request_id=request_id)
    assert ev.outcome == "not_found"


def test_uvcis_never_hold_a_slash_so_they_fit_the_revoke_path():
    from registry.certificates import payload

    assert not any("/" in payload.new_uvci("PK", "PK-PB") for _ in range(2000))


def test_revoke_then_verify_fails_as_revoked(shared_world, runtime, child):
    w = shared_world
    body = issue(w, "clinic_a", child["id"])[0].json()
    path = f"/api/v1/certificates/{body['uvci'].replace('#', '%23')}/revoke"
    request_id = rid()
    r = w.client.post(path, json={"reason": "issued-in-error"}, headers=w.h("clinic_a", **{"X-Request-ID": request_id}))
    assert r.status_code == 403  # clinic workers issue, officials revoke
    [ev] = audit_events(runtime, request_id=request_id)
    assert ev.action == "certificate.revoke" and ev.outcome == "denied"

    request_id = rid()
    r = w.client.post(path, json={"reason": "issued-in-error"}, headers=w.h("official_district", **{"X-Request-ID": request_id}))
    assert r.status_code == 200, r.json()
    [ev] = audit_events(runtime, request_id=request_id)
    assert (ev.action, ev.outcome, ev.resource_id) == ("certificate.revoke", "success", body["uvci"])
    v = verify(w, body["hc1"]).json()
    assert v["valid"] is False and v["error"]["code"] == "revoked" and v["certificate"] is None

    again = w.client.post(path, json={"reason": "fraud"}, headers=w.h("official_district"))
    assert again.status_code == 409
    other = w.client.post(path, json={"reason": "fraud"}, headers=w.h("official_other_province"))
    assert other.status_code == 404
    unknown = w.client.post("/api/v1/certificates/URN:UVCI:01:PK:PBNOPE%23A/revoke", json={"reason": "fraud"},
                            headers=w.h("official_district"))
    assert unknown.status_code == 404
    request_id = rid()
    too_long = w.client.post(f"/api/v1/certificates/{'A' * 81}/revoke", json={"reason": "fraud"},
                             headers=w.h("official_district", **{"X-Request-ID": request_id}))
    assert too_long.status_code == 422
    [ev] = audit_events(runtime, request_id=request_id)
    assert ev.action == "certificate.revoke" and ev.outcome == "invalid"

    # the trust list carries the revocation (as a hash) for offline verifiers
    tl = w.client.get("/api/v1/certificates/trust-list").json()
    assert service.uvci_hash(body["uvci"]) in tl["revoked_uvci_sha256"]


def test_nothing_is_issued_while_the_signers_certificate_is_not_yet_valid(shared_world, runtime, child):
    """A clock before the signer's notBefore (a clock or keyring fault): 503, no certificate, and
    no new signer either. An expired signer is renewed instead (tests/test_certificate_signer_renewal.py)."""
    from datetime import timedelta

    from registry import clock

    signer = service.issuer_keys(runtime).signer("PK-PB")
    earlier = signer.certificate.not_valid_before_utc - timedelta(seconds=1)
    with clock.frozen_at(earlier):
        r, request_id = issue(shared_world, "clinic_a", child["id"])
    assert r.status_code == 503 and "HC1:" not in r.text
    [ev] = audit_events(runtime, request_id=request_id)
    assert (ev.action, ev.outcome) == ("certificate.issue", "error")
    assert service.issuer_keys(runtime).signer("PK-PB").kid == signer.kid
    assert issue(shared_world, "clinic_a", child["id"])[0].status_code == 200


@pytest.mark.parametrize("who", ["official_other_province", "official_other_district"])
def test_revoking_outside_scope_answers_as_revoking_a_certificate_that_does_not_exist(shared_world, runtime, child, who):
    w = shared_world
    body = issue(w, "clinic_a", child["id"])[0].json()
    answers = {}
    for case, uvci in (("outside", body["uvci"]), ("unknown", service.new_uvci("PK", "PK-PB"))):
        request_id = rid()
        r = w.client.post(f"/api/v1/certificates/{uvci.replace('#', '%23')}/revoke", json={"reason": "fraud"},
                          headers=w.h(who, **{"X-Request-ID": request_id}))
        problem = r.json()
        assert problem.pop("request_id") == request_id
        [ev] = audit_events(runtime, request_id=request_id)
        assert (ev.action, ev.resource_type, ev.resource_id) == ("certificate.revoke", "Certificate", uvci)
        answers[case] = (r.status_code, r.headers["content-type"], problem, ev.outcome)
    assert answers["outside"] == answers["unknown"]
    assert answers["unknown"][0] == 404 and answers["unknown"][3] == "not_found"
    assert verify(w, body["hc1"]).json()["valid"] is True  # nothing was revoked


def test_verify_is_public_and_reports_codes(shared_world, runtime, child):
    w = shared_world
    text = issue(w, "clinic_a", child["id"])[0].json()["hc1"]
    before = len(audit_events(runtime))
    cases = {"garbage": "bad_prefix", "HC1:a": "base45", "HC1:" + text[4:-3] + "AAA": None}
    for bad, code in cases.items():
        r = verify(w, bad)
        assert r.status_code == 200 and r.json()["valid"] is False
        assert r.json()["error"]["code"] in (code,) if code else r.json()["error"]["code"] in hcert.ERROR_CODES
    assert verify(w, "HC1:" + "A" * 9000).status_code == 422
    assert len(audit_events(runtime)) == before  # verification reads no patient record and writes nothing


def test_cli_verifies_offline_with_an_exported_trust_list(shared_world, runtime, child, tmp_path, monkeypatch):
    from cli import certificates as cli

    w = shared_world
    text = issue(w, "clinic_a", child["id"])[0].json()["hc1"]
    monkeypatch.setattr(cli, "_runtime", lambda: runtime)
    runner = CliRunner()
    out = tmp_path / "trust.json"
    assert runner.invoke(cli.app, ["trust-list", "export", str(out)]).exit_code == 0
    ok = runner.invoke(cli.app, ["verify", text, "--trust-list", str(out)])
    assert ok.exit_code == 0 and "VALID" in ok.output and child["_input"]["given_name"] not in ok.output
    expired = runner.invoke(cli.app, ["verify", text, "--trust-list", str(out), "--at", "2030-01-01T00:00:00Z"])
    assert expired.exit_code == 1 and "expired" in expired.output
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"format": "nhr-dcc-trust-list/1", "signers": []}))
    unknown = runner.invoke(cli.app, ["verify", text, "--trust-list", str(empty)])
    assert unknown.exit_code == 1 and "unknown_kid" in unknown.output
    online = runner.invoke(cli.app, ["verify", text])
    assert online.exit_code == 0


VECTOR = Path(__file__).resolve().parent / "data" / "eu-dcc" / "AT-1.json"


@pytest.mark.skipif(not VECTOR.exists(), reason=f"EU DCC vector not found at {VECTOR}")
def test_cli_keys_and_a_foreign_issuer_imported_into_the_trust_list(runtime, tmp_path, monkeypatch):
    from cli import certificates as cli

    monkeypatch.setattr(cli, "_runtime", lambda: runtime)
    runner = CliRunner()
    keys = runner.invoke(cli.app, ["keys", "--custodian", "PK-PB", "--custodian", "PK-SD"])
    assert keys.exit_code == 0 and "PK-SD: kid" in keys.output
    v = json.loads(VECTOR.read_text())
    before = runner.invoke(cli.app, ["verify", v["PREFIX"], "--at", v["TESTCTX"]["VALIDATIONCLOCK"]])
    assert before.exit_code == 1 and "unknown_kid" in before.output
    cert = tmp_path / "at-dsc.b64"
    cert.write_text(v["TESTCTX"]["CERTIFICATE"])
    assert runner.invoke(cli.app, ["trust-list", "import", str(cert)]).exit_code == 0
    after = runner.invoke(cli.app, ["verify", v["PREFIX"], "--at", v["TESTCTX"]["VALIDATIONCLOCK"]])
    assert after.exit_code == 0 and "VALID" in after.output and "iss=AT" in after.output
