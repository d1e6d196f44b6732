"""Smoke test of `python -m bench.reencrypt` at a tiny size, so that it does not rot. Nothing here
looks at a timing. Needs PostgreSQL (the benchmark's population loader uses COPY), so it is
skipped on SQLite."""

from __future__ import annotations

import math
import os

import pytest

PG_URL = os.environ.get("NHR_TEST_DATABASE_URL", "")


@pytest.mark.skipif(not PG_URL.startswith(("postgresql", "postgres:")), reason="needs PostgreSQL (NHR_TEST_DATABASE_URL)")
def test_reencrypt_benchmark_machinery():
    from bench.reencrypt import measure

    doc = measure(scale=300, rounds=1, duration=1, concurrency=2, batch_size=50, server_url=PG_URL, log=lambda *_: None)
    s = doc["summary"]
    for key in ("read_ratio_median", "job_rows_per_s_under_read_median", "job_rows_per_s_alone_median"):
        assert isinstance(s[key], float) and math.isfinite(s[key]) and s[key] > 0, key
    assert s["read_during_non2xx"] == 0  # every version stays readable while the job runs
    assert doc["meta"]["punjab_patients"] > 0 and len(doc["rounds"]) == 1
