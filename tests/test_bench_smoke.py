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
    # The workloads wired in later run too, and their requests are accepted: the officials read
    # their reports, every uploaded dose and Bundle entry is stored (fresh ids, valid bodies).
    for name in ("coverage_nation", "coverage_province", "coverage_district", "batch_sync", "fhir_bundle"):
        w = doc["workloads"][name]
        assert w["runs"][0]["requests"] > 0 and w["errors"] == 0 and w["non2xx"] == 0, name
        assert w["refused_records"] == 0, name
    for name in ("batch_sync", "fhir_bundle"):
        assert doc["workloads"][name]["rate"] > 0 and doc["workloads"][name]["unit"] in ("doses", "resources"), name
    sealing = doc["workloads"]["audit_sealing"]
    assert sealing["errors"] == 0 and sealing["status"] in ("pass", "short")
    rebuild = {o["name"]: o for o in doc["one_off"]}["coverage_rebuild"]
    assert _numeric(rebuild["seconds"]) and rebuild["status"] in ("pass", "short")
    meta = doc["meta"]
    assert meta["patients"] == 100 and _numeric(meta["doses"])
    assert meta["generator"] in ("wrk", "python")
    assert doc["memory"]["peak_rss_mb"]["registry"], "peak RSS of the registry workers"
    # Worker CPU per request: measured for every workload served by a server of ours.
    for name in ("trivial", "read", "register", "batch_sync", "coverage_nation"):
        assert _numeric(doc["workloads"][name]["cpu_us"]) and doc["workloads"][name]["cpu_us"] >= 0, name
    assert _numeric(doc["workloads"]["read"]["cpu_ratio_trivial"])


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


def test_upload_bodies_are_fresh_and_distinct():
    """A resent batch is all `duplicate` and measures nothing: every body the upload workloads
    send has new record ids, and each names distinct children (no server needed)."""
    import random

    from bench.population import Population
    from bench.uploads import batch_body, bundle_body

    pop = Population("postgresql://unused", "/nonexistent", "u", "p",
                     read_ids=[f"00000000-0000-4000-8000-{i:012d}" for i in range(60)])
    rng = random.Random(3)
    ids, requests = set(), 0
    for build, k in ((batch_body, 50), (bundle_body, 20)):
        for _ in range(3):
            body, n = build(pop, rng)
            doc = json.loads(body)
            if "items" in doc:
                children = [it["patient_id"] for it in doc["items"]]
                ids |= {it["data"]["id"] for it in doc["items"]}
                assert all(it["data"]["override_reason"] for it in doc["items"])
            else:
                assert doc["type"] == "transaction"
                children = [e["resource"]["patient"]["reference"] for e in doc["entry"]]
                ids |= {e["resource"]["id"] for e in doc["entry"]}
            assert n == k == len(children) == len(set(children))
            requests += n
    assert len(ids) == requests


@needs_postgres
def test_the_population_loader_writes_events_the_sealer_vouches_for(tmp_path):
    """bench/population.py writes its audit events by COPY, bypassing the services: each carries the
    MAC the registry's own code computes (security/audit/event_mac.py), so the sealer seals them all
    as vouched for and quarantines none."""
    import secrets

    from bench.population import create_database, drop_database, libpq, load, settings_for
    from registry import bootstrap
    from registry.audit_log import sealing
    from registry.runtime import Runtime

    name = f"nhr_bench_mac_{secrets.token_hex(3)}"
    url = create_database(PG_URL, name)
    rt = Runtime.build(settings_for(url, str(tmp_path / "keyring")))
    try:
        rt.keyring.create_missing = True
        bootstrap.init(rt)
        sealing.seal_all(rt)  # init's own events, so that only the loader's are left
        patients, _ = load(libpq(url), str(tmp_path / "keyring"), 40, procs=1, seed=7, log=lambda *a: None)
        assert patients == 40
        quarantined: list = []
        assert sealing.seal_all(rt, quarantined=quarantined) >= 40
        assert quarantined == []
        assert sealing.verify_database(rt).tree_size >= 40
    finally:
        rt.engine.dispose()
        drop_database(PG_URL, name)
