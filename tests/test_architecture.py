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


def _module_graph(root: Path) -> dict[str, set[str]]:
    """Project module -> the project modules it imports (at any depth of the file, lazy ones too)."""
    mods = {}
    for pkg in ("api", "registry", "security", "cli"):
        for p in (root / pkg).rglob("*.py"):
            name = ".".join(p.relative_to(root).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = p

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, p in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Import):
                deps.update(filter(None, (resolve(a.name) for a in node.names)))
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps.update(filter(None, (resolve(f"{node.module}.{a.name}") for a in node.names)))
        graph[name] = deps - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert _cycles(_module_graph(ROOT)) == []


def test_the_cycle_check_can_fail(tmp_path):
    (tmp_path / "registry").mkdir()
    (tmp_path / "registry" / "a.py").write_text("from registry import b\n")
    (tmp_path / "registry" / "b.py").write_text("def f():\n    from registry.a import x\n")
    assert _cycles(_module_graph(tmp_path)) == [["registry.a", "registry.b"]]
