"""The production path: the API never creates keys; `nhr init` (what docker-compose's init
service runs) provisions every kind of key on an empty key directory, after which the API
starts; an API pointed at an empty key directory refuses to start."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cli.main import app as cli_app
from conftest import PG_URL, drop_database, fresh_database_url
from registry.runtime import Runtime
from registry.settings import Settings, get_settings
from security.crypto.errors import KeyUnavailable
from security.crypto.keyring import SECRET_NAMES

pytestmark = pytest.mark.skipif(not PG_URL, reason="production settings refuse SQLite: needs NHR_TEST_DATABASE_URL (PostgreSQL)")


@pytest.fixture
def production(tmp_path, monkeypatch):
    url = fresh_database_url(tmp_path, "prod")
    keys = tmp_path / "keyring"
    for name, value in {"NHR_ENV": "production", "NHR_DATABASE_URL": url, "NHR_KEY_DIR": str(keys)}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield url, keys
    get_settings.cache_clear()
    drop_database(url)


def test_api_refuses_to_start_without_provisioned_keys(production):
    _, keys = production
    with pytest.raises(KeyUnavailable):
        Runtime.build(Settings())
    assert not (keys / "secrets").exists(), "the API must not create keys in production"


def test_init_provisions_every_key_and_the_api_starts(production):
    url, keys = production
    r = CliRunner().invoke(cli_app, ["init"])
    assert r.exit_code == 0, r.output
    # Every named secret the code may ask for (keyring.secret refuses any other name): before
    # 2026-11-22 the sync receipts' and idempotency responses' secrets were missing here, so every
    # Idempotency-Key request would have failed in production.
    secret_files = [f"secrets/{name}.key" for name in SECRET_NAMES]
    assert {"secrets/sync-receipts.key", "secrets/idempotency-responses.key"} <= set(secret_files)
    for path in (*secret_files, "kek/PK-PB.key", "kek/PK-SD.key", "certificates/csca-PK.crt.pem",
                 "certificates/dsc-PK-PB.crt.pem"):
        assert (keys / path).exists(), f"{path} was not provisioned"
    assert any((keys / "signing").iterdir()), "no audit signing key"
    rt = Runtime.build(Settings())  # not provisioning: everything it needs exists now
    rt.warm()
    assert "PK-PB" in rt.keys.custodians()
    from fastapi.testclient import TestClient

    from api.app import create_app

    with TestClient(create_app(rt.settings, rt)) as c:
        assert c.get("/readyz").json()["status"] == "ready"
    rt.engine.dispose()
    assert CliRunner().invoke(cli_app, ["keys", "init"]).exit_code == 0  # idempotent
