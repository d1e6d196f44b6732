"""`nhr reports ...` on a database of its own: the demo leaves aggregates built, population
and mapping files load (and bad ones are refused with the line), rebuild and coverage run."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from registry.reports.models import ChildStatus, TargetPopulation
from registry.runtime import Runtime
from tests.conftest import make_settings
from tests.test_migrations_and_cli import Cli, _ok, drop_database, fresh_database_url


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reports-cli")
    url = fresh_database_url(tmp, "rcli")
    run = Cli(url, tmp / "keyring")
    _ok(run("demo", "--no-serve", "--patients", "60"))
    yield run
    drop_database(url)


def _count(cli, model):
    rt = Runtime.build(make_settings(cli.url, cli.key_dir))
    try:
        with rt.sessions() as s:
            return s.execute(select(func.count()).select_from(model)).scalar_one()
    finally:
        rt.engine.dispose()


def test_demo_leaves_the_aggregates_built(cli):
    assert _count(cli, ChildStatus) == 60


def test_rebuild_and_coverage(cli):
    assert "rebuilt coverage aggregates for 60 children" in _ok(cli("reports", "rebuild"))
    out = _ok(cli("reports", "coverage", "--cohort", "2025", "--jurisdiction", "PK-PB"))
    assert "PENTA-3 coverage" in out


def test_population_load(cli, tmp_path):
    good = tmp_path / "pop.csv"
    good.write_text("jurisdiction_code,year,population\nPK-PB-LAH,2025,312000\nPK-SD-KRC,2025,410000\n")
    assert "loaded 2 target population figure(s)" in _ok(cli("reports", "population", "load", str(good)))
    assert _count(cli, TargetPopulation) == 2
    bad = tmp_path / "bad.csv"
    bad.write_text("jurisdiction_code,year,population\nPK-PB-LAH,2025,many\n")
    result = cli("reports", "population", "load", str(bad))
    assert result.exit_code == 1 and "line 2" in result.output


def test_dhis2_mapping_load(cli, tmp_path):
    f = tmp_path / "map.json"
    f.write_text(json.dumps({"jurisdiction": "PK-PB", "data_elements": {"PENTA-3": {"dataElement": "n6aMJNLdvep"}},
                             "org_units": {"PK-PB-LAH": "O6uvpzGd5pu"}}))
    assert "loaded the DHIS2 mapping of PK-PB" in _ok(cli("reports", "dhis2-mapping", str(f)))
    f.write_text(json.dumps({"jurisdiction": "PK-PB", "data_elements": {"PENTA-3": {"dataElement": "x"}}, "org_units": {}}))
    assert cli("reports", "dhis2-mapping", str(f)).exit_code == 1


def test_check_agrees_then_lists_a_planted_difference(cli):
    """`nhr reports check` recomputes with the engine: no difference after the demo's rebuild;
    a count altered behind the registry's back is listed (place, month, item, both counts) and
    exits 1; a sample compares the sampled children's status rows."""
    from sqlalchemy import update

    from registry.reports.models import CoverageCount

    out = _ok(cli("reports", "check"))
    assert "checked 60 children" in out and "no differences" in out
    assert "no differences" in _ok(cli("reports", "check", "--jurisdiction", "PK-PB", "--sample", "10"))
    rt = Runtime.build(make_settings(cli.url, cli.key_dir))
    try:
        with rt.sessions.begin() as s:
            row = s.execute(select(CoverageCount).where(CoverageCount.item == "_children").limit(1)).scalar_one()
            leaf, month, was = row.leaf, row.cohort_month, row.any_count
            s.execute(update(CoverageCount).where(CoverageCount.leaf == leaf, CoverageCount.cohort_month == month,
                                                  CoverageCount.item == "_children").values(any_count=was + 3))
    finally:
        rt.engine.dispose()
    result = cli("reports", "check")
    assert result.exit_code == 1
    assert leaf in result.output and str(month) in result.output and str(was + 3) in result.output
    assert "1 difference(s)" in result.output
    _ok(cli("reports", "rebuild"))
    assert "no differences" in _ok(cli("reports", "check"))
