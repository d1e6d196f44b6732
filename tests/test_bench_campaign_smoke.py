"""Smoke test of `python -m bench.campaign --quick` (issue 17), so that it does not rot: a tiny
burst (4 devices, one worker) through the real batch sync API, with dropped connections resent
under the same Idempotency-Key, then the database check. Nothing here looks at a timing.

Needs PostgreSQL (the population is loaded with COPY and COPY is the floor), so it is skipped on
SQLite.
"""

from __future__ import annotations

import json
import math
import os

import pytest

PG_URL = os.environ.get("NHR_TEST_DATABASE_URL", "")


def _numeric(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@pytest.mark.skipif(not PG_URL.startswith(("postgresql", "postgres:")), reason="needs PostgreSQL (NHR_TEST_DATABASE_URL)")
def test_quick_campaign_burst_stores_every_dose_once(tmp_path, capsys):
    from bench.campaign import Options, run

    out = tmp_path / "campaign.json"
    doc = run(Options.quick(server_url=PG_URL, json_path=str(out), quiet=True))
    assert json.loads(out.read_text())["rounds"][0]["burst"]["doses_sent"] == doc["rounds"][0]["burst"]["doses_sent"]
    [r] = doc["rounds"]
    b = r["burst"]
    # 4 devices x (5 campaign doses + 1 newborn x 2 birth doses) and 4 refusals, 4 registrations
    assert (b["doses_sent"], b["refusals_sent"], b["registrations_sent"]) == (28, 4, 4)
    assert 0 < b["lookups"] <= 8  # up to 2 a device: children without a B-form cannot be looked up by one
    # half the devices lost their first upload after sending it; each resent it with the same key
    assert b["dropped"] == 2 and b["sends"] >= 6
    assert b["batches_acked"] == 4 and b["errors"] == 0 and b["status_5xx"] == 0 and b["rejected"] == 0
    assert b["lookup_misses"] == 0
    # every dose, refusal and registration exactly once in the database, nothing more
    assert b["check"] == {"doses_missing": 0, "doses_extra": 0, "doses_wrong_status": 0, "patients_missing": 0,
                          "doses_found": 32, "rows_since_burst": 32}
    # the acknowledged counts add up: the first answer created them; a replay repeats it
    assert b["created"] == 4 + 28 + 4 and b["duplicate"] == 0
    for key in ("seconds", "doses_per_s", "batch_p50_ms", "batch_p99_ms", "cpu_ms_per_dose"):
        assert _numeric(b[key]) and b[key] >= 0, key
    assert r["copy"]["rate"] > 0 and r["trivial"]["rate"] > 0
    for key, value in r["ratios"].items():
        assert _numeric(value) and value > 0, key
    assert r["scaling_vs_first"] == 1.0
    # nothing printed, and no patient data in the results file (ids of the batch are UUIDs we made)
    assert capsys.readouterr().out == ""
    assert "given_name" not in out.read_text() and "bform" not in out.read_text()


def test_the_command_line_has_help_and_defaults(capsys):
    from bench.campaign import main

    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for option in ("--devices", "--doses", "--registrations", "--refusals", "--lookups", "--drop-rate", "--workers",
                   "--quick", "--concurrency", "--scale", "--floor-seconds", "--profile", "--server-url"):
        assert option in text, option
    assert "default 200" in text and "default 1,2,4" in text


def test_profile_summary_sorts_gil_samples_by_area(tmp_path):
    """The shares printed for a py-spy profile: first matching area wins, the sealer and the
    report refresher threads apart from the request path."""
    from bench.pyspy import summarise_profile

    stacks = tmp_path / "w1.txt"
    stacks.write_text(
        "_worker (concurrent/futures/thread.py:83);seal_all (registry/audit_log/sealing.py:82);"
        "Cursor.execute (psycopg/cursor.py:97) 30\n"
        "upload (api/routes/sync.py:24);_snapshot (registry/immunizations/batch.py:129);"
        "Cursor.fetchall (psycopg/cursor.py:282) 50\n"
        "RequestResponseCycle.send (uvicorn/protocols/http/httptools_impl.py:522) 10\n"
        "refresh_all (registry/reports/background.py:28);Cursor.fetchall (psycopg/cursor.py:282) 10\n"
        "not a stack line\n")
    out = summarise_profile([stacks])
    assert out["samples"] == 100
    assert out["shares"] == {"psycopg / SQLAlchemy (statements, round trips, rows)": 0.5, "audit sealer thread": 0.3,
                             "HTTP, middleware, FastAPI dependencies": 0.1, "report refresher thread": 0.1}
    assert out["top_leaves"][0] == ("Cursor.fetchall (psycopg/cursor.py:282)", 0.6)
    assert summarise_profile([tmp_path / "missing.txt"]) == {"samples": 0}
