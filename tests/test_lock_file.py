"""requirements.lock pins every dependency that pyproject.toml declares (runtime and test extra),
so a new dependency cannot reach a deployment unpinned; dev.py and the Dockerfile install with it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-").replace(".", "-")


def test_every_declared_dependency_is_pinned():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]}
    pinned = {_name(line) for line in (ROOT / "requirements.lock").read_text().splitlines()
              if line and not line.startswith((" ", "#")) and "==" in line}
    missing = sorted(declared - pinned)
    assert not missing, f"not in requirements.lock (regenerate it, CONTRIBUTING.md): {missing}"


def test_installers_use_the_lock():
    assert "requirements.lock" in (ROOT / "dev.py").read_text()
    assert "-c requirements.lock" in (ROOT / "Dockerfile").read_text()
