"""The record-linkage benches still run (tiny sizes; figures are not checked, only that each
prints its tables): `bench.matching` in memory, and `bench.matching_dedupe` on PostgreSQL
(skipped on SQLite). Speed is measured by running them, never asserted here."""

from __future__ import annotations

import os

import pytest

PG_URL = os.environ.get("NHR_TEST_DATABASE_URL", "")


def test_matching_bench_prints_quality_phases_and_the_sweep(capsys):
    from bench import matching

    assert matching.main(["--size", "1500", "--bloom", "300"]) == 0
    out = capsys.readouterr().out
    for part in ("| | review (>= possible) |", "Phases at", "pairs per CPU second", "Review threshold sweep",
                 "LSH bands", "after: field-level (fbf-1)"):
        assert part in out, part


@pytest.mark.skipif(not PG_URL.startswith(("postgresql", "postgres:")), reason="needs PostgreSQL (NHR_TEST_DATABASE_URL)")
def test_dedupe_bench_runs_on_postgresql():
    from bench import matching_dedupe

    lines = matching_dedupe.measure(PG_URL, 400)
    assert any(line.startswith("| whole run |") for line in lines)
