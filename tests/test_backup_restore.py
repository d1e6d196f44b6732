"""Backups are proven to restore: a populated registry (records, doses, a sealed audit log) is
backed up, destroyed (database and key directory), restored by `nhr restore` as an operator
would run it, and then every record decrypts and the audit log verifies. The key backup is
unreadable without the passphrase and is refused when changed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from registry import backups, bootstrap
from registry.audit_log import sealing
from registry.database import normalise_url
from registry.demo.generator import generate
from registry.runtime import Runtime
from tests.conftest import PG_URL, drop_database, fresh_database_url, make_settings

ROOT = Path(__file__).resolve().parents[1]
PASSPHRASE = "two custodians, one envelope"


def _destroy(url: str, key_dir: Path) -> None:
    shutil.rmtree(key_dir)
    if url.startswith("sqlite"):
        Path(url.removeprefix("sqlite:///")).unlink()
        return
    name = url.rpartition("/")[2]
    drop_database(url)
    admin = create_engine(normalise_url(PG_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()


@pytest.fixture
def populated(tmp_path):
    url = fresh_database_url(tmp_path, "backup")
    key_dir = tmp_path / "keyring"
    rt = Runtime.build(make_settings(url, key_dir))
    bootstrap.init(rt)
    plaintexts: list[dict] = []
    with rt.sessions.begin() as s:
        patients, _ = generate(rt, s, patients=40, plaintexts=plaintexts)
    assert sealing.seal_all(rt) > 0
    rt.engine.dispose()
    yield url, key_dir, patients, plaintexts
    drop_database(url)


def test_backup_destroy_restore_proves_itself(populated, tmp_path):
    url, key_dir, patients, plaintexts = populated
    manifest = backups.backup(url, key_dir, tmp_path / "backup", PASSPHRASE)
    keys_blob = (tmp_path / "backup" / backups.read_manifest(manifest)["keys"]["file"]).read_bytes()
    for f in key_dir.rglob("*"):
        if f.is_file():
            assert f.read_bytes()[:32] not in keys_blob, "a key file is readable in the backup"
    assert b"kek" not in keys_blob and b"keyring" not in keys_blob
    manifest_text = manifest.read_text()
    assert not any(p["given_name"] in manifest_text for p in plaintexts)

    _destroy(url, key_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NHR_")}
    env.update(NHR_ENV="test", NHR_DATABASE_URL=url, NHR_KEY_DIR=str(key_dir), PYTHONPATH=str(ROOT), COLUMNS="200")
    result = subprocess.run([sys.executable, "-m", "cli.main", "restore", str(manifest), "--passphrase-stdin"],
                            input=PASSPHRASE + "\n", env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-400:] + result.stderr[-400:]
    assert f"{patients} of {patients}" in result.stdout and "intact" in result.stdout

    rt = Runtime.build(make_settings(url, key_dir))
    rt.load_keys()
    proof = backups.verify_restored(rt)
    rt.engine.dispose()
    assert proof.ok and proof.patients == patients


def test_wrong_passphrase_and_changed_files_are_refused(populated, tmp_path):
    url, key_dir, _, _ = populated
    manifest = backups.backup(url, key_dir, tmp_path / "backup", PASSPHRASE)
    target = tmp_path / "elsewhere" / "keyring"
    keys_file = manifest.parent / backups.read_manifest(manifest)["keys"]["file"]
    with pytest.raises(backups.BackupError, match="wrong passphrase"):
        backups.open_keys(keys_file, "not the passphrase at all", target)
    assert not target.exists()
    blob = bytearray(keys_file.read_bytes())
    blob[len(backups.MAGIC) + 3] ^= 1  # the salt, part of the authenticated header
    keys_file.write_bytes(bytes(blob))
    with pytest.raises(backups.BackupError):
        backups.open_keys(keys_file, PASSPHRASE, target)
    with pytest.raises(backups.BackupError, match="does not match its digest"):
        backups.restore(manifest, url, target, PASSPHRASE)


def test_restore_refuses_a_registry_that_is_not_empty(populated, tmp_path):
    url, key_dir, _, _ = populated
    manifest = backups.backup(url, key_dir, tmp_path / "backup", PASSPHRASE)
    with pytest.raises(backups.BackupError, match="not empty"):
        backups.restore(manifest, url, tmp_path / "fresh-keys", PASSPHRASE)
    assert not (tmp_path / "fresh-keys").exists(), "a refused restore wrote keys"


def test_short_passphrase_is_refused(populated, tmp_path):
    url, key_dir, _, _ = populated
    with pytest.raises(backups.BackupError, match="at least"):
        backups.backup(url, key_dir, tmp_path / "backup", "short")
