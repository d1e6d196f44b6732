"""The national linkage secret stays with the provinces' encoders (issue 13 item 7).

The comparing side (cross_province.compare, `nhr dedupe cross-province`) runs with a keyring that
has no `linkage-secret` and cannot create one; an encoder may read its copy from
NHR_LINKAGE_SECRET_FILE; `nhr init` / `nhr keys init --without-linkage-secret` provision the
comparer's key directory without it."""

from __future__ import annotations

import base64
import shutil
import uuid

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from conftest import drop_database, fresh_database_url, make_settings, unique_nadra
from registry.linkage import cross_province, linkage_secret
from registry.linkage.models import LinkCandidate
from registry.runtime import Runtime
from registry.settings import get_settings
from security.crypto.errors import KeyUnavailable
from test_linkage_registration import _child, _post, _variant  # the same registration helpers

ENC = cross_province.ENC
SECRET_FILE = "secrets/linkage-secret.key"


def _without_linkage_secret(runtime, tmp_path, **update) -> Runtime:
    """A runtime over the same database whose key directory lacks `linkage-secret` and which may
    not create keys: any use of the keyring's linkage secret raises KeyUnavailable."""
    keys = tmp_path / "keyring"
    shutil.copytree(runtime.settings.key_dir, keys)
    (keys / SECRET_FILE).unlink()
    settings = make_settings(runtime.settings.database_url, keys).model_copy(update=update)
    rt = Runtime.build(settings, engine=runtime.engine)
    rt.keyring.create_missing = False
    return rt


def _encodings(runtime, custodian: str) -> dict:
    with runtime.sessions() as s:
        return dict(s.execute(select(ENC.c.patient_id, ENC.c.clk).where(ENC.c.custodian == custodian)).all())


def test_compare_needs_no_linkage_secret(world, runtime, tmp_path):
    """Encodings made by encoders holding the secret are compared by a runtime that has none;
    the pair is found. Fails if compare touched the secret (KeyUnavailable) or created it."""
    first = _post(world, "clinic_c", _child()).json()  # Sindh
    body = _variant({**_child(), "family_name": first["family_name"],
                     "guardian": {"name": first["guardian"]["name"], "relationship": "mother", "cnic": unique_nadra()}})
    dup = _post(world, "clinic_a", {**body, "confirm_not_duplicate": True}).json()  # Punjab
    t, pair_ids = LinkCandidate.__table__, [uuid.UUID(first["id"]), uuid.UUID(dup["id"])]
    with runtime.sessions.begin() as s:  # forget the pair the registration queued
        s.execute(t.delete().where(t.c.left_id.in_(pair_ids), t.c.right_id.in_(pair_ids)))
    assert cross_province.encode_province(runtime, "PK-SD") >= 1  # the provinces' encoders hold the secret
    assert cross_province.encode_province(runtime, "PK-PB") >= 1

    national = _without_linkage_secret(runtime, tmp_path)
    with pytest.raises(KeyUnavailable):  # the premise: this runtime cannot use the secret
        national.keyring.secret("linkage-secret")
    compared, proposed = cross_province.compare(national)
    assert compared >= 1 and proposed >= 1
    with runtime.sessions() as s:
        found = s.execute(select(t.c.source).where(t.c.left_id.in_(pair_ids), t.c.right_id.in_(pair_ids))).scalars().all()
    assert found == ["cross_province"]
    assert not (national.settings.key_dir / SECRET_FILE).exists()
    with pytest.raises(KeyUnavailable):  # and the encoding side does need it
        cross_province.encode_province(national, "PK-SD")


def test_encoder_reads_the_secret_from_NHR_LINKAGE_SECRET_FILE(world, runtime, tmp_path):
    """A province encoder without `linkage-secret` in its keyring, given the same secret in a
    file, computes the same encodings as one reading it from the keyring."""
    _post(world, "clinic_c", _child())
    cross_province.encode_province(runtime, "PK-SD")
    expected = _encodings(runtime, "PK-SD")
    secret_file = tmp_path / "linkage-secret"
    secret_file.write_bytes(base64.b64encode(runtime.keyring.secret("linkage-secret")) + b"\n")
    province = _without_linkage_secret(runtime, tmp_path, linkage_secret_file=secret_file)
    province.load_keys()
    assert cross_province.encode_province(province, "PK-SD") == len(expected)
    assert _encodings(runtime, "PK-SD") == expected
    assert not (province.settings.key_dir / SECRET_FILE).exists()


@pytest.mark.parametrize("content", [None, b"", b"not base64!\n", base64.b64encode(b"x" * 16) + b"\n"])
def test_a_bad_secret_file_is_refused_without_its_content(runtime, tmp_path, content):
    secret_file = tmp_path / "linkage-secret"
    if content is not None:
        secret_file.write_bytes(content)
    rt = _without_linkage_secret(runtime, tmp_path, linkage_secret_file=secret_file)
    with pytest.raises(KeyUnavailable) as err:
        linkage_secret.load(rt)
    assert "NHR_LINKAGE_SECRET_FILE" in str(err.value)
    if content:
        assert content.strip().decode() not in str(err.value)


def test_init_without_linkage_secret(tmp_path, monkeypatch):
    """The national comparer's key directory: every other named secret, no `linkage-secret`."""
    url, keys = fresh_database_url(tmp_path, "national"), tmp_path / "keyring"
    for name, value in {"NHR_ENV": "test", "NHR_DATABASE_URL": url, "NHR_KEY_DIR": str(keys)}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    from cli.main import app as cli_app
    try:
        for command in (["init", "--without-linkage-secret"], ["keys", "init", "--without-linkage-secret"]):
            r = CliRunner().invoke(cli_app, command)
            assert r.exit_code == 0, r.output
            assert (keys / "secrets/token-signing.key").exists() and (keys / "secrets/audit-events.key").exists()
            assert not (keys / SECRET_FILE).exists()
        # the comparer's command runs there; in test settings a key used is created, so this fails if it touched it
        r = CliRunner().invoke(cli_app, ["dedupe", "cross-province"])
        assert r.exit_code == 0, r.output
        assert "0 pairs of encodings compared" in r.output and not (keys / SECRET_FILE).exists()
        r = CliRunner().invoke(cli_app, ["keys", "init"])  # a province encoder's: with it
        assert r.exit_code == 0, r.output
        assert (keys / SECRET_FILE).exists()
    finally:
        get_settings.cache_clear()
        drop_database(url)
