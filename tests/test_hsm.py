"""Punjab's KEK in a PKCS#11 token (SoftHSM2, initialised here in a temporary directory), Sindh's
in the key directory: fields encrypt and decrypt through the ordinary API, the KEK's value
cannot be read out of the token, and a KEK rotation inside the token keeps every read working.

Skipped when SoftHSM2 is not installed, unless NHR_REQUIRE_HSM=1 (CI), where it fails instead."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from registry import bootstrap
from registry.runtime import Runtime
from security.crypto.data_keys import DataKeyRow
from security.crypto.errors import KeyUnavailable
from security.crypto.hsm import DEFAULT_MODULE, Pkcs11Kek
from tests.conftest import build_world, drop_database, fresh_database_url, make_settings

pkcs11 = pytest.importorskip("pkcs11")

SO_PIN, PIN, LABEL = "so-pin-not-secret-5678", "user-pin-not-secret-1234", "nhr-test"
_have = shutil.which("softhsm2-util") is not None and DEFAULT_MODULE.exists()
if not _have:
    if os.environ.get("NHR_REQUIRE_HSM") == "1":
        raise RuntimeError("NHR_REQUIRE_HSM=1 but SoftHSM2 (softhsm2-util, libsofthsm2.so) is not installed")
    pytest.skip("SoftHSM2 is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def token(tmp_path_factory):
    """A fresh SoftHSM2 token in its own directory; SOFTHSM2_CONF points at it for this process."""
    root = tmp_path_factory.mktemp("softhsm")
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", LABEL, "--so-pin", SO_PIN, "--pin", PIN],
                   check=True, capture_output=True, env={**os.environ, "SOFTHSM2_CONF": str(conf)})
    pin_file = root / "pin"
    pin_file.write_text(PIN + "\n")
    pin_file.chmod(0o600)
    return pin_file


def hsm_settings(url: str, key_dir: Path, pin_file: Path):
    return make_settings(url, key_dir).model_copy(update={
        "key_backends": "PK-PB=pkcs11,*=file", "pkcs11_token_label": LABEL, "pkcs11_pin_file": pin_file})


@pytest.fixture(scope="module")
def deployment(token, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hsmdb")
    url = fresh_database_url(tmp, "hsm")
    settings = hsm_settings(url, tmp / "keyring", token)
    rt = Runtime.build(settings)
    bootstrap.init(rt)
    with TestClient(create_app(settings, rt), raise_server_exceptions=False) as client:
        yield rt, client
    rt.engine.dispose()
    drop_database(url)


def _read(world, who: str, pid: str) -> dict:
    r = world.client.get(f"/api/v1/patients/{pid}", headers=world.h(who))
    assert r.status_code == 200, r.json()
    return r.json()


def test_punjab_on_the_hsm_and_sindh_on_files_through_the_api(deployment):
    rt, client = deployment
    w = build_world(client, rt)
    punjab, sindh = w.register("clinic_a"), w.register("clinic_c")
    assert punjab["custodian"] == "PK-PB" and sindh["custodian"] == "PK-SD"
    for who, p in (("clinic_a", punjab), ("clinic_c", sindh)):
        got = _read(w, who, p["id"])
        assert (got["given_name"], got["bform"], got["guardian"]["cnic"]) == (
            p["_input"]["given_name"], p["_input"]["bform"], p["_input"]["guardian"]["cnic"])
    with rt.engine.connect() as c:
        backends = {(r.custodian, r.kek_backend) for r in c.execute(select(DataKeyRow.custodian, DataKeyRow.kek_backend))}
    assert ("PK-PB", "pkcs11") in backends and ("PK-SD", "file") in backends
    assert ("PK-PB", "file") not in backends
    kek_dir = rt.settings.key_dir / "kek"
    assert (kek_dir / "PK-SD.key").exists() and not list(kek_dir.glob("PK-PB*")), "Punjab's KEK must not be a file"


def test_the_kek_cannot_be_read_out_of_the_token(deployment, token):
    rt, _ = deployment
    hsm = Pkcs11Kek(DEFAULT_MODULE, LABEL, PIN, create_missing=False)
    with hsm.open_session() as s:
        kek = hsm.kek_object(s, "PK-PB")
        assert kek[pkcs11.Attribute.SENSITIVE] is True and kek[pkcs11.Attribute.EXTRACTABLE] is False
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            kek[pkcs11.Attribute.VALUE]
        # Nor can it be wrapped out under another key the PIN holder makes (the export path of PKCS#11).
        carrier = s.generate_key(pkcs11.KeyType.AES, 256, store=False,
                                 template={pkcs11.Attribute.WRAP: True, pkcs11.Attribute.UNWRAP: True})
        with pytest.raises(pkcs11.exceptions.PKCS11Error):
            carrier.wrap_key(kek, mechanism=pkcs11.Mechanism.AES_KEY_WRAP_PAD)


def test_a_process_without_the_token_cannot_read_punjab(deployment, tmp_path):
    """The key directory alone (e.g. a copied backup of it) does not open Punjab's data keys."""
    rt, _ = deployment
    shutil.copytree(rt.settings.key_dir, tmp_path / "copy")
    files_only = Runtime.build(make_settings(rt.settings.database_url, tmp_path / "copy"))
    try:
        with pytest.raises(KeyUnavailable):  # the row says its KEK is in the token; no file stands in
            files_only.load_keys()
        assert not list((tmp_path / "copy" / "kek").glob("PK-PB*"))
    finally:
        files_only.engine.dispose()


def test_kek_rotation_inside_the_token_keeps_reads(deployment, token, tmp_path):
    rt, client = deployment
    w = build_world(client, rt)
    child = w.register("clinic_a")
    with rt.engine.begin() as conn:
        new, unused = rt.keys.rewrap(conn, "PK-PB")
    assert new == 2 and unused == [("pkcs11", 1)]
    hsm = rt.keys.kek.backend("PK-PB")
    hsm.destroy_kek("PK-PB", 1)
    assert hsm.kek_versions("PK-PB") == [2]
    # A new process (nothing cached) unwraps under generation 2, inside the token.
    fresh = Runtime.build(hsm_settings(rt.settings.database_url, rt.settings.key_dir, token))
    try:
        with TestClient(create_app(fresh.settings, fresh), raise_server_exceptions=False) as c2:
            w.client = c2
            assert _read(w, "clinic_a", child["id"])["bform"] == child["_input"]["bform"]
    finally:
        w.client = client
        fresh.engine.dispose()


def test_a_province_moves_from_files_into_the_hsm(deployment, token):
    """`nhr keys rotate-kek` under a configuration that now routes Sindh to the token re-wraps
    Sindh's data keys inside the HSM; its file KEK can then be destroyed and every read still works."""
    rt, client = deployment
    w = build_world(client, rt)
    child = w.register("clinic_c")
    moved = Runtime.build(hsm_settings(rt.settings.database_url, rt.settings.key_dir, token).model_copy(
        update={"key_backends": "PK-PB=pkcs11,PK-SD=pkcs11,*=file"}))
    try:
        moved.load_keys()
        with moved.engine.begin() as conn:
            new, unused = moved.keys.rewrap(conn, "PK-SD")
        assert unused == [("file", 1)] and new == 2  # generations count per province, across backends
        moved.keys.kek.destroy_kek("PK-SD", 1, "file")
        assert not (rt.settings.key_dir / "kek" / "PK-SD.key").exists()
        with moved.engine.connect() as c:
            assert {r.kek_backend for r in c.execute(select(DataKeyRow.kek_backend).where(DataKeyRow.custodian == "PK-SD"))} == {"pkcs11"}
    finally:
        moved.engine.dispose()
    again = Runtime.build(moved.settings)
    try:
        with TestClient(create_app(again.settings, again), raise_server_exceptions=False) as c2:
            w.client = c2
            assert _read(w, "clinic_c", child["id"])["bform"] == child["_input"]["bform"]
    finally:
        w.client = client
        again.engine.dispose()
