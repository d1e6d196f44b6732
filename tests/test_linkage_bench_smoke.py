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
                 "LSH bands", "field-level (fbf-1), fixed prior", "field-level (fbf-1), per-block prior",
                 "(before)", "(after)"):
        assert part in out, part


@pytest.mark.skipif(not PG_URL.startswith(("postgresql", "postgres:")), reason="needs PostgreSQL (NHR_TEST_DATABASE_URL)")
def test_dedupe_bench_runs_on_postgresql():
    from bench import matching_dedupe

    lines = matching_dedupe.measure(PG_URL, 400)
    assert any(line.startswith("| whole run |") for line in lines)


@pytest.mark.skipif(not PG_URL.startswith(("postgresql", "postgres:")), reason="needs PostgreSQL (NHR_TEST_DATABASE_URL)")
def test_dedupe_full_run_bench_loads_by_copy_and_runs_the_cli():
    """`--full-run` on a tiny province: loaded by COPY, the CLI run as its own process finds the
    injected duplicates (a queue with high recall); the database is dropped."""
    import re

    from bench import dedupe_full_run

    lines = dedupe_full_run.measure(PG_URL, 300, workers=2)
    [run] = [line for line in lines if line.startswith("| 1: full run")]
    cells = [c.strip() for c in run.split("|")]
    assert int(cells[5].replace(",", "")) > 300 and int(cells[8].replace(",", "")) > 0  # records, new candidates
    [review] = [line for line in lines if line.startswith("| review queue")]
    assert float(re.findall(r"\| ([0-9.]+) \|", review)[1]) > 0.9  # recall of the review queue


@pytest.mark.skipif(not PG_URL.startswith(("postgresql", "postgres:")), reason="needs PostgreSQL (NHR_TEST_DATABASE_URL)")
def test_dedupe_full_run_load_only_then_reuse(tmp_path):
    """`--load-only`: the province is loaded and kept without a dedupe run (an empty queue); the
    printed `--reuse` run then times the dedupe alone on it. The database is dropped here."""
    import secrets

    from sqlalchemy import create_engine, text

    from bench import dedupe_full_run

    db = f"nhr_loadonly_{secrets.token_hex(3)}"
    key_dir = tmp_path / "kept" / "keyring"
    admin = create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    try:
        [note] = dedupe_full_run.measure(PG_URL, 200, db=db, load_only=True, key_dir=key_dir)
        assert f"--db {db} --reuse {key_dir}" in note and key_dir.is_dir()
        url = PG_URL.rsplit("/", 1)[0] + f"/{db}"
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        with engine.connect() as c:
            assert c.execute(text("SELECT count(*) FROM patients")).scalar() > 200
            assert c.execute(text("SELECT count(*) FROM link_candidates")).scalar() == 0
            assert c.execute(text("SELECT count(*) FROM dedupe_runs")).scalar() == 0
        engine.dispose()
        lines = dedupe_full_run.measure(PG_URL, 200, db=db, reuse=key_dir, keep=False)
        [run] = [line for line in lines if line.startswith("| 1: full run")]
        assert int([c.strip() for c in run.split("|")][8].replace(",", "")) > 0  # new candidates
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        admin.dispose()
