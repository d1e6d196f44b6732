"""The issuer never signs with a document signer that is expired or not yet valid, and renews it
within NHR_CERTIFICATE_SIGNER_RENEW_DAYS of its expiry (issue 18). Real keys in a real keyring;
time is set through the registry's one clock (`registry.clock.frozen_at`), the code under test is
not replaced.

The boundary, to the second: a signer signs while `notBefore <= t < notAfter - renew_days`; at
`notAfter - renew_days` (with 0 days: at the expiry second itself) it is renewed first."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from conftest import build_world, drop_database, fresh_database_url, make_settings
from registry import bootstrap, clock
from registry.runtime import Runtime
from security.certificates import hcert
from security.certificates.issuer import IssuerKeys
from security.crypto.errors import KeyUnavailable
from security.crypto.keyring import FileKeyring

SECOND = timedelta(seconds=1)


@pytest.fixture
def keys(tmp_path) -> IssuerKeys:
    return IssuerKeys(FileKeyring(tmp_path, create_missing=True))


def test_at_the_exact_expiry_second_the_signer_is_renewed_not_used(keys):
    first = keys.signer("PK-PB")
    expiry = first.certificate.not_valid_after_utc
    assert keys.signer("PK-PB", at=expiry - SECOND).kid == first.kid
    renewed = keys.signer("PK-PB", at=expiry)
    assert renewed.kid != first.kid and renewed.generation == 2
    assert renewed.certificate.not_valid_before_utc <= expiry < renewed.certificate.not_valid_after_utc
    assert keys.signer("PK-PB", at=expiry + SECOND).kid == renewed.kid  # renewed once, not per call
    past = keys.signer("PK-PB", at=expiry + timedelta(days=400))  # long expired: renewed, never used
    assert past.kid == renewed.kid  # the renewed one is still valid then
    assert set(keys.trust_list().signers) == {first.kid, renewed.kid}  # the old one still verifies its certificates
    assert keys.custodians() == ["PK-PB"]


def test_within_the_renewal_window_the_signer_is_renewed(keys):
    first = keys.signer("PK-SD", renew_days=30)
    window = first.certificate.not_valid_after_utc - timedelta(days=30)
    assert keys.signer("PK-SD", at=window - SECOND, renew_days=30).kid == first.kid
    renewed = keys.signer("PK-SD", at=window, renew_days=30)
    assert renewed.kid != first.kid
    assert renewed.certificate.not_valid_after_utc - window > timedelta(days=30)


def test_a_signer_not_yet_valid_is_refused_and_nothing_is_created(keys, tmp_path):
    first = keys.signer("PK-PB")
    before = sorted(p.name for p in (tmp_path / "certificates").iterdir())
    with pytest.raises(KeyUnavailable):
        keys.signer("PK-PB", at=first.certificate.not_valid_before_utc - SECOND)
    assert sorted(p.name for p in (tmp_path / "certificates").iterdir()) == before
    assert keys.signer("PK-PB", at=first.certificate.not_valid_before_utc).kid == first.kid  # notBefore included


def test_another_process_uses_the_same_renewed_signer(tmp_path):
    """Two issuers on one keyring (two API workers): one renewal between them, not two."""
    a, b = (IssuerKeys(FileKeyring(tmp_path, create_missing=True)) for _ in range(2))
    expiry = a.signer("PK-PB").certificate.not_valid_after_utc
    assert b.signer("PK-PB").kid == a.signer("PK-PB").kid
    renewed = a.signer("PK-PB", at=expiry)
    assert b.signer("PK-PB", at=expiry).kid == renewed.kid
    assert len(a.trust_list().signers) == 2


def test_renewal_writes_in_production_but_a_first_signer_is_still_provisioned(tmp_path):
    expiry = IssuerKeys(FileKeyring(tmp_path, create_missing=True)).signer("PK-PB").certificate.not_valid_after_utc
    production = IssuerKeys(FileKeyring(tmp_path, create_missing=False))
    assert production.signer("PK-PB", at=expiry).generation == 2
    with pytest.raises(KeyUnavailable):
        production.signer("PK-KP")  # no signer yet: `nhr certificate keys`, never created on first use
    # a renewal cut off after its key was written: the next process finishes it with that key
    (tmp_path / "certificates" / "dsc-PK-PB.2.crt.pem").unlink()
    again = IssuerKeys(FileKeyring(tmp_path, create_missing=False)).signer("PK-PB", at=expiry)
    assert again.generation == 2 and again.kid != production.signer("PK-PB", at=expiry).kid


@pytest.fixture
def app_world(tmp_path):
    """An app on a database and keyring of its own: renewing here must not move the shared
    keyring's signers into the future for the other tests."""
    url = fresh_database_url(tmp_path, "renewal")
    rt = Runtime.build(make_settings(url, tmp_path / "keyring", certificates={"validity_days": 3650}))
    bootstrap.init(rt)
    with TestClient(create_app(rt.settings, rt), raise_server_exceptions=False) as client:
        yield rt, build_world(client, rt)
    rt.engine.dispose()
    drop_database(url)


def test_issuance_through_the_api_renews_at_the_window_and_both_certificates_verify(app_world):
    rt, w = app_world
    child = w.register("clinic_a", birth_date="2026-06-01")
    r = w.client.post(f"/api/v1/patients/{child['id']}/immunizations", headers=w.h("clinic_a"),
                      json={"vaccine": "OPV", "dose_number": 0, "date_given": "2026-06-01"})
    assert r.status_code == 201, r.json()
    url = f"/api/v1/patients/{child['id']}/certificate"
    old = w.client.get(url, headers=w.h("clinic_a")).json()["hc1"]
    old_kid = hcert.decode(old).kid
    signer = IssuerKeys(rt.keyring).signer(child["province"])
    assert signer.kid == old_kid
    window = signer.certificate.not_valid_after_utc - timedelta(days=rt.settings.certificates.signer_renew_days)
    assert rt.settings.certificates.signer_renew_days == 30  # the default
    with clock.frozen_at(window - SECOND):
        assert hcert.decode(w.client.get(url, headers=w.h("clinic_a")).json()["hc1"]).kid == old_kid
    with clock.frozen_at(window):
        new = w.client.get(url, headers=w.h("clinic_a")).json()["hc1"]
        assert hcert.decode(new).kid != old_kid
        for text in (old, new):  # the old signer stays in the trust list: its certificate still verifies
            v = w.client.post("/api/v1/certificates/verify", json={"hc1": text}).json()
            assert v["valid"] is True, v.get("error")
    kids = {base64.b64decode(s["kid"]) for s in w.client.get("/api/v1/certificates/trust-list").json()["signers"]}
    assert {old_kid, hcert.decode(new).kid} <= kids
