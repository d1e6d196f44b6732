"""Rules that matter, checked rather than written down: import direction api -> registry ->
security; the domain knows nothing of HTTP; services never commit; modules stay small."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"api": 2, "registry": 1, "security": 0}
HTTP = {"fastapi", "starlette", "uvicorn", "httpx"}


def _modules(package: str):
    return sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", ["registry", "security"])
def test_imports_flow_downwards(package):
    offenders = []
    for path in _modules(package):
        for name in _imports(path):
            if name in LAYERS and LAYERS[name] > LAYERS[package]:
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, offenders


@pytest.mark.parametrize("package", ["registry", "security"])
def test_domain_knows_nothing_of_http(package):
    offenders = [f"{p.relative_to(ROOT)}: {sorted(_imports(p) & HTTP)}" for p in _modules(package) if _imports(p) & HTTP]
    assert not offenders, offenders


def test_services_never_commit():
    offenders = []
    for path in (ROOT / "registry").rglob("service.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in {"commit", "rollback"}:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders


def test_modules_stay_small():
    big = [f"{p.relative_to(ROOT)} ({n} lines)" for pkg in ("api", "registry", "security", "cli")
           for p in _modules(pkg) if (n := len(p.read_text().splitlines())) > 400]
    assert not big, big


def test_the_checker_can_fail(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from api.deps import require\nimport fastapi\n")
    assert "api" in _imports(bad) and "fastapi" in _imports(bad)
