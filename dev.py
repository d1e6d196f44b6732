#!/usr/bin/env python3
"""One entry point for a fresh machine with Python 3.11+ and nothing else.

    python3 dev.py demo      # install into .venv, set up SQLite + keyring + demo data, serve on localhost
    python3 dev.py test      # install into .venv (with test extras), run the whole test suite

Extra arguments are passed on: `python3 dev.py test -k audit -x`, `python3 dev.py demo --patients 500`.
The virtual environment is reinstalled only when pyproject.toml or requirements.lock changes, with
the versions pinned in requirements.lock.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")


def ensure_env(extras: str) -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"NHR needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    stamp = VENV / f".installed-{extras or 'base'}"
    lock = ROOT / "requirements.lock"  # the versions a deployment gets; see CONTRIBUTING.md to update it
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + (lock.read_bytes() if lock.exists() else b"")).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    if not (BIN / "python").exists():
        print("creating .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    target = f".[{extras}]" if extras else "."
    print(f"installing NHR ({target}) into .venv ...", flush=True)
    pins = ["-c", str(lock)] if lock.exists() else []
    subprocess.run([str(BIN / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *pins, "-e", target],
                   cwd=ROOT, check=True)
    stamp.write_text(digest)


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in {"demo", "test", "nhr"}:
        print(__doc__)
        return 2
    what, rest = sys.argv[1], sys.argv[2:]
    if what == "nhr":
        # `nhr` runs where the caller stands (so `dev.py nhr import ./file.csv` reads that file and
        # `audit export out.ndjson` writes there), on the repository's own database and keys.
        ensure_env("")
        return subprocess.call([str(BIN / "nhr"), *rest], env=_repository_settings())
    os.chdir(ROOT)
    if what == "test":
        ensure_env("test")
        return subprocess.call([str(BIN / "python"), "-m", "pytest", *rest])
    ensure_env("")
    return subprocess.call([str(BIN / "nhr"), "demo", *rest])


def _repository_settings() -> dict[str, str]:
    """The environment with the repository's `.env` and the development defaults made absolute,
    for a command that runs outside the repository (variables already set win)."""
    env = dict(os.environ)
    dotenv = ROOT / ".env"
    if dotenv.exists():
        for line in dotenv.read_text().splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and key.startswith("NHR_") and not key.startswith("#"):
                env.setdefault(key.strip(), value.strip().strip("'\""))
    env.setdefault("NHR_DATABASE_URL", f"sqlite:///{ROOT / 'var' / 'nhr.sqlite3'}")
    env.setdefault("NHR_KEY_DIR", str(ROOT / "var" / "keyring"))
    return env


if __name__ == "__main__":
    sys.exit(main())
