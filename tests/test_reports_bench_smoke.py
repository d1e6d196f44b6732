"""Smoke test of `python -m bench.reports` on a tiny population, so that it does not rot.
Nothing here looks at a timing. PostgreSQL only (the generator uses generate_series)."""

from __future__ import annotations

import math
import os

import pytest

PG_URL = os.environ.get("NHR_TEST_DATABASE_URL", "")


@pytest.mark.skipif(not PG_URL.startswith(("postgresql", "postgres:")), reason="needs PostgreSQL (NHR_TEST_DATABASE_URL)")
def test_reports_bench_machinery_on_a_tiny_population():
    from bench.reports import run

    result = run(PG_URL, doses=3000, runs=2, log=lambda *_: None)
    assert result["doses"] > 1000 and result["children"] > 100 and result["count_rows"] > 0
    for key in ("rebuild_seconds", "refresh_1000_ms"):
        assert isinstance(result[key], (int, float)) and math.isfinite(result[key])
    for level in ("nation", "province", "district"):
        assert set(result[f"{level}_ms"]) == {"p50", "p99"}


@pytest.mark.skipif(not PG_URL.startswith(("postgresql", "postgres:")), reason="needs PostgreSQL (NHR_TEST_DATABASE_URL)")
def test_a_kept_database_is_measured_again_without_regenerating():
    from bench.population import drop_database
    from bench.reports import run

    lines: list[str] = []
    first = run(PG_URL, doses=2000, runs=1, keep=True, log=lambda *a: lines.append(" ".join(map(str, a))))
    url = next(line for line in lines if line.startswith("kept database")).rsplit("--database-url ", 1)[1]
    try:
        again = run(PG_URL, doses=0, runs=1, log=lambda *_: None, database_url=url)
        assert again["doses"] == first["doses"] and again["children"] == first["children"]
    finally:
        drop_database(PG_URL, url.rsplit("/", 1)[1])
