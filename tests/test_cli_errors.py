"""The `nhr` command fails in one or two plain lines, with a non-zero exit and no traceback;
`--debug` shows the traceback. Run as a real process, as an operator would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _nhr(*args: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("NHR_")}
    base.update({"NHR_KEY_DIR": str(tmp_path / "keys"), "COLUMNS": "200", **env})
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=tmp_path, env={**base, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)


def _plain(result: subprocess.CompletedProcess) -> list[str]:
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 2
    return lines


def test_unreachable_database_is_two_lines_without_the_password(tmp_path):
    url = "postgresql://nhr:s3cret-value@127.0.0.1:1/nhr"
    lines = _plain(_nhr("users", "list", tmp_path=tmp_path, NHR_DATABASE_URL=url))
    assert "cannot reach the database" in lines[0]
    assert "s3cret-value" not in "\n".join(lines)


def test_production_settings_mistake_is_named(tmp_path):
    lines = _plain(_nhr("users", "list", tmp_path=tmp_path, NHR_ENV="production"))
    assert "settings refused" in lines[0] and "NHR_DATABASE_URL" in lines[0]


def test_missing_file_is_named(tmp_path):
    url = f"sqlite:///{tmp_path / 'nhr.sqlite3'}"
    result = _nhr("schedules", "load", str(tmp_path / "no-such-schedule.json"), tmp_path=tmp_path, NHR_DATABASE_URL=url)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout


def test_debug_shows_the_traceback(tmp_path):
    result = _nhr("--debug", "users", "list", tmp_path=tmp_path, NHR_DATABASE_URL="postgresql://nhr@127.0.0.1:1/nhr")
    assert result.returncode != 0 and "Traceback" in result.stderr
