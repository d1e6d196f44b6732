"""Smoke test of the benchmark command (`python -m bench`): its whole machinery on a tiny
population, so that it does not rot. Benchmarks are not tests: nothing here looks at a timing.

Needs PostgreSQL (the benchmark uses COPY and runs servers against a database of its own), so it
is skipped on SQLite.
"""

from __future__ import annotations

import json
import math
import os

import pytest

PG_URL = os.environ.get("NHR_TEST_DATABASE_URL", "")

needs_postgres = pytest.mark.skipif(not PG_URL.startswith(("postgresql", "postgres:")),
                                reason="the benchmark smoke test needs PostgreSQL (set NHR_TEST_DATABASE_URL)")


def _numeric(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@needs_postgres
def test_quick_machinery_on_a_tiny_population(tmp_path):
    from bench.runner import Options, run
    from bench.workloads import NAMES, NOT_YET

    out = tmp_path / "bench.json"
    run(Options(quick=True, scale=100, runs=1, duration=1, concurrency=2, workers=1, json_path=str(out),
                server_url=PG_URL, quiet=True))
    doc = json.loads(out.read_text())
    assert set(doc["workloads"]) == set(NAMES)
    for name, w in doc["workloads"].items():
        for key in ("rate", "p50_ms", "p99_ms", "spread", "errors", "non2xx"):
            assert _numeric(w[key]), (name, key)
        assert len(w["runs"]) == 1, name
        for key in ("ratio_trivial", "ratio_baseline", "ratio_floor"):
            if key in w:
                assert w[key] is None or _numeric(w[key]), (name, key)
    assert {n["name"] for n in doc["not_yet_implemented"]} == {n for n, *_ in NOT_YET}
    meta = doc["meta"]
    assert meta["patients"] == 100 and _numeric(meta["doses"])
    assert meta["generator"] in ("wrk", "python")
    assert doc["memory"]["peak_rss_mb"]["registry"], "peak RSS of the registry workers"


def test_python_load_generator_renders_unique_identifiers():
    """The built-in generator and the wrk script agree on the placeholders (no server needed)."""
    import random

    from bench.loadgen import RequestSpec, _render, lua_script

    spec = RequestSpec("POST", "/p/{x}", '{"bform": "{u}", "cnic": "{g}"}', choices=["a"], headers={"X-T": "1"})
    rng = random.Random(1)
    first, second = _render(spec, "h:1", rng, 1, 5), _render(spec, "h:1", rng, 2, 5)
    assert first != second and b"POST /p/a HTTP/1.1" in first
    body = json.loads(first.split(b"\r\n\r\n", 1)[1])
    assert len(body["bform"]) == 13 and body["bform"][0] == "9" and body["cnic"][0] == "8"
    script = lua_script(spec, 5)
    assert "function request()" in script and "function done(" in script
