"""Backups that are proven to restore: the database and the key directory, taken together,
written apart, the keys never unprotected.

A backup is three files in one folder, named by its time:
- `nhr-<stamp>.db`: the database (PostgreSQL: `pg_dump --format=custom`; SQLite: an online copy
  through SQLite's backup API). Its fields are ciphertext, as in the live database.
- `nhr-<stamp>.keys`: the key directory as a tar archive, encrypted with AES-256-GCM under a key
  derived from a passphrase with scrypt (N=2^15, r=8, p=1, a random salt). The header (magic,
  salt, cost) is authenticated as associated data, so a changed header fails like a wrong
  passphrase. Nothing of the archive is readable without the passphrase.
- `nhr-<stamp>.json`: the manifest (time, database kind and Alembic revision, file names, sizes
  and SHA-256 digests, KDF parameters). No secret and no patient data.

Store the `.keys` file apart from the `.db` file (docs/operators.md, "Key custody"): a thief needs
both and the passphrase. `restore` refuses a non-empty target unless forced, checks the digests,
restores both, and then `verify_restored` proves it: the schema matches the code, every patient
record decrypts, and the audit log verifies against its signed checkpoints.

Passwords never appear on a command line: `pg_dump`/`pg_restore` get the database password
through `PGPASSWORD` in their environment.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from sqlalchemy import create_engine, inspect, select, text
from sqlalchemy.engine import make_url

MAGIC = b"NHR-KEYS-1"
SCRYPT_LOG2_N = 15
MIN_PASSPHRASE = 12


class BackupError(Exception):
    """A backup or restore that cannot go on; the message says why and names no secret."""


# -- the key directory, encrypted ---------------------------------------------------------------

def _derive(passphrase: bytes, salt: bytes, log2_n: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=2 ** log2_n, r=8, p=1).derive(passphrase)


def seal_keys(key_dir: Path, out: Path, passphrase: str) -> None:
    """Write `key_dir` as an encrypted tar archive to `out` (mode 0600)."""
    if len(passphrase) < MIN_PASSPHRASE:
        raise BackupError(f"the passphrase must have at least {MIN_PASSPHRASE} characters")
    if not key_dir.is_dir() or not any(key_dir.iterdir()):
        raise BackupError(f"the key directory {key_dir} is missing or empty")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(key_dir, arcname="keyring")
    salt, nonce = os.urandom(16), os.urandom(12)
    header = MAGIC + salt + bytes([SCRYPT_LOG2_N])
    sealed = AESGCM(_derive(passphrase.encode(), salt, SCRYPT_LOG2_N)).encrypt(nonce, buf.getvalue(), header)
    _write_private(out, header + nonce + sealed)


def open_keys(path: Path, passphrase: str, key_dir: Path) -> int:
    """Decrypt the archive at `path` into `key_dir` (which must not exist or be empty); returns the
    number of files restored. A wrong passphrase or a changed file raises BackupError."""
    blob = path.read_bytes()
    n = len(MAGIC)
    if not blob.startswith(MAGIC) or len(blob) < n + 16 + 1 + 12 + 16:
        raise BackupError(f"{path.name} is not an NHR key backup")
    header, nonce, sealed = blob[:n + 17], blob[n + 17:n + 29], blob[n + 29:]
    try:
        plain = AESGCM(_derive(passphrase.encode(), header[n:n + 16], header[n + 16])).decrypt(nonce, sealed, header)
    except InvalidTag:
        raise BackupError("the key backup does not open: wrong passphrase, or the file was changed") from None
    if key_dir.exists() and any(key_dir.iterdir()):
        raise BackupError(f"the key directory {key_dir} is not empty; move it away first (or restore with --force)")
    staging = key_dir.parent / f".{key_dir.name}.restoring"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True, mode=0o700)
    with tarfile.open(fileobj=io.BytesIO(plain), mode="r:gz") as tar:
        tar.extractall(staging, filter="data")
    restored = staging / "keyring"
    count = sum(1 for p in restored.rglob("*") if p.is_file())
    if key_dir.exists():
        key_dir.rmdir()
    restored.rename(key_dir)
    staging.rmdir()
    os.chmod(key_dir, 0o700)
    return count


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


# -- the database --------------------------------------------------------------------------------

def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """A libpq URI without the password, and the environment that carries it."""
    u = make_url(url)
    env = dict(os.environ)
    if u.password:
        env["PGPASSWORD"] = u.password
    plain = u.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        raise BackupError(f"{name} is not installed: install the PostgreSQL client (Debian: postgresql-client)")
    return found


def _run(argv: list[str], env: dict[str, str], what: str) -> None:
    result = subprocess.run(argv, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        # pg_dump's own message names objects, not values; keep only its first line
        first = (result.stderr.strip().splitlines() or ["(no message)"])[0][:200]
        raise BackupError(f"{what} failed: {first}")


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database:
        raise BackupError("an in-memory SQLite database cannot be backed up")
    return Path(database)


def dump_database(url: str, out: Path) -> None:
    if url.startswith("sqlite"):
        src = sqlite3.connect(_sqlite_path(url))
        dst = sqlite3.connect(out)
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()
        os.chmod(out, 0o600)
        return
    uri, env = _libpq(url)
    _run([_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges", f"--file={out}", uri], env, "pg_dump")
    os.chmod(out, 0o600)


def database_is_empty(url: str) -> bool:
    if url.startswith("sqlite") and not _sqlite_path(url).exists():
        return True
    engine = create_engine(_normalised(url))
    try:
        return not inspect(engine).get_table_names()
    finally:
        engine.dispose()


def restore_database(url: str, dump: Path, *, force: bool = False) -> None:
    if not force and not database_is_empty(url):
        raise BackupError("the target database is not empty; restore into an empty one (or restore with --force)")
    if url.startswith("sqlite"):
        target = _sqlite_path(url)
        target.parent.mkdir(parents=True, exist_ok=True)
        src = sqlite3.connect(dump)
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()
        return
    uri, env = _libpq(url)
    argv = [_tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error", f"--dbname={uri}"]
    if force:
        argv += ["--clean", "--if-exists"]
    _run([*argv, str(dump)], env, "pg_restore")


def _normalised(url: str) -> str:
    from registry.database import normalise_url

    return normalise_url(url)


def _revision(url: str) -> str | None:
    engine = create_engine(_normalised(url))
    try:
        with engine.connect() as c:
            return c.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except Exception:  # noqa: BLE001 - a database without Alembic's table has no revision
        return None
    finally:
        engine.dispose()


# -- backup and restore as a whole ---------------------------------------------------------------

def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def backup(url: str, key_dir: Path, out_dir: Path, passphrase: str, *, now: datetime | None = None) -> Path:
    """Write a backup into `out_dir`; returns the manifest's path."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    out_dir.mkdir(parents=True, exist_ok=True)
    db_file, keys_file = out_dir / f"nhr-{stamp}.db", out_dir / f"nhr-{stamp}.keys"
    seal_keys(Path(key_dir), keys_file, passphrase)  # first: a wrong passphrase fails before the dump
    dump_database(url, db_file)
    manifest = {
        "format": "nhr-backup/1", "created_at": (now or datetime.now(UTC)).isoformat(),
        "database": {"kind": "sqlite" if url.startswith("sqlite") else "postgresql", "file": db_file.name,
                     "bytes": db_file.stat().st_size, "sha256": _digest(db_file), "revision": _revision(url)},
        "keys": {"file": keys_file.name, "bytes": keys_file.stat().st_size, "sha256": _digest(keys_file),
                 "encryption": f"AES-256-GCM, key from scrypt(N=2^{SCRYPT_LOG2_N}, r=8, p=1)"},
    }
    path = out_dir / f"nhr-{stamp}.json"
    path.write_text(json.dumps(manifest, indent=1))
    return path


def read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text())
        assert manifest["format"] == "nhr-backup/1"
        return manifest
    except (OSError, ValueError, KeyError, AssertionError, TypeError):
        raise BackupError(f"{path.name} is not an NHR backup manifest") from None


def restore(manifest_path: Path, url: str, key_dir: Path, passphrase: str, *, force: bool = False) -> dict:
    """Restore the backup described by `manifest_path` into `url` and `key_dir`; returns the manifest."""
    manifest = read_manifest(manifest_path)
    folder = manifest_path.parent
    db_file, keys_file = folder / manifest["database"]["file"], folder / manifest["keys"]["file"]
    for part, f in (("database", db_file), ("keys", keys_file)):
        if not f.exists():
            raise BackupError(f"the backup's {part} file {f.name} is missing")
        if _digest(f) != manifest[part]["sha256"]:
            raise BackupError(f"the backup's {part} file {f.name} does not match its digest in the manifest")
    kind = "sqlite" if url.startswith("sqlite") else "postgresql"
    if kind != manifest["database"]["kind"]:
        raise BackupError(f"this is a {manifest['database']['kind']} backup; the target is {kind}")
    key_dir = Path(key_dir)
    if not force and not database_is_empty(url):
        raise BackupError("the target database is not empty; restore into an empty one (or restore with --force)")
    if force and key_dir.exists():
        shutil.rmtree(key_dir)
    open_keys(keys_file, passphrase, key_dir)
    try:
        restore_database(url, db_file, force=force)
    except BaseException:
        shutil.rmtree(key_dir, ignore_errors=True)  # nothing half-restored: the keys go with the database
        raise
    return manifest


@dataclass
class Proof:
    schema_matches: bool
    patients: int
    patients_decrypted: int
    audit_summary: str | None
    audit_problem: str | None

    @property
    def ok(self) -> bool:
        return self.schema_matches and self.patients == self.patients_decrypted and self.audit_problem is None


def verify_restored(rt) -> Proof:
    """Prove a restored registry: schema, every patient record decrypts, the audit log verifies."""
    from registry import bootstrap
    from registry.audit_log import sealing
    from registry.patients import codec
    from registry.patients.models import Patient
    from security.audit.verify import Discrepancy

    try:
        bootstrap.check(rt.settings.database_url)
        schema = True
    except Exception:  # noqa: BLE001 - alembic raises its own error type for drift
        schema = False
    total = decrypted = 0
    with rt.sessions() as s:
        for row in s.execute(select(Patient).execution_options(yield_per=500)).scalars():
            total += 1
            try:
                codec.to_view(rt.cipher, row)
                decrypted += 1
            except Exception:  # noqa: BLE001 - counted, never printed (no patient data)
                pass
    try:
        summary, problem = sealing.verify_database(rt).summary(), None
    except Discrepancy as exc:
        summary, problem = None, str(exc)
    return Proof(schema, total, decrypted, summary, problem)
