"""Smoke test of `python -m bench.imports` at a tiny size, so that it does not rot. Nothing here
looks at a timing. Needs PostgreSQL (the floor is COPY), so it is skipped on SQLite."""

from __future__ import annotations

import json
import math
import os

import pytest

PG_URL = os.environ.get("NHR_TEST_DATABASE_URL", "")


@pytest.mark.skipif(not PG_URL.startswith(("postgresql", "postgres:")), reason="needs PostgreSQL (NHR_TEST_DATABASE_URL)")
def test_import_benchmark_machinery(tmp_path):
    from bench.imports import run

    out = tmp_path / "imports.json"
    doc = run(PG_URL, doses=300, rounds=1, fhir=40, json_path=str(out), log=lambda *_: None)
    assert json.loads(out.read_text()) == json.loads(json.dumps(doc))
    for key in ("import_doses_per_s", "copy_rows_per_s", "ratio_to_copy"):
        assert isinstance(doc[key], float) and math.isfinite(doc[key]) and doc[key] > 0, key
    assert len(doc["rounds"]) == 1 and doc["target_ratio"] == 0.20
    assert doc["fhir"]["imported"] == 40 and doc["fhir"]["rejected"] == 0 and doc["fhir"]["validated_per_s"] > 0
    assert doc["fhir"]["imported_2_workers"] == 40 and doc["fhir"]["rejected_2_workers"] == 0  # new children, not duplicates
