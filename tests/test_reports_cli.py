"""`nhr reports ...` on a database of its own: the demo leaves aggregates built, population
and mapping files load (and bad ones are refused with the line), rebuild and coverage run."""

from __future__ import annotations

import json
from datetime import date

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from registry.patients.models import Patient
from registry.reports.models import ChildStatus, TargetPopulation
from registry.runtime import Runtime
from tests.conftest import make_settings
from tests.test_migrations_and_cli import Cli, _ok, drop_database, fresh_database_url


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reports-cli")
    url = fresh_database_url(tmp, "rcli")
    run = Cli(url, tmp / "keyring")
    _ok(run("demo", "--no-serve", "--patients", "60", "--duplicates", "0"))  # the tests count 60 children
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


def _rows(cli, statement):
    rt = Runtime.build(make_settings(cli.url, cli.key_dir))
    try:
        with rt.sessions() as s:
            return s.execute(statement).all()
    finally:
        rt.engine.dispose()


def test_demo_loads_target_populations_and_a_dhis2_mapping(cli):
    """A fresh demo database has target populations (every place with demo children, its ancestors
    summing their figures, a little above the registered children) and the country's DHIS2 mapping,
    both audited as the CLI; coverage against the target denominator answers."""
    from registry.reports.models import Dhis2Mapping
    from security.audit.models import AuditEventRow

    year = date.today().year - 1
    figures = dict(_rows(cli, select(TargetPopulation.jurisdiction_code, TargetPopulation.population)
                         .where(TargetPopulation.year == year)))
    provinces = [v for k, v in figures.items() if k.count("-") == 1]
    assert abs(figures["PK"] - sum(provinces)) <= len(provinces), "provinces do not add up to the country"  # rounding
    assert figures["PK-PB"] >= figures.get("PK-PB-LAH", 0) > 0
    assert _count(cli, Patient) / 3 <= figures["PK"] <= _count(cli, Patient) / 3 / 0.84 + 1  # registered 85-97% of target
    [(document,)] = _rows(cli, select(Dhis2Mapping.document).where(Dhis2Mapping.jurisdiction_code == "PK"))
    assert {"PENTA-3", "MR-1"} <= set(document["data_elements"]) and {"PK", "PK-PB", "PK-PB-LAH"} <= set(document["org_units"])
    actions = {a for (a,) in _rows(cli, select(AuditEventRow.action).where(AuditEventRow.detail["via"].as_string() == "cli demo"))}
    assert {"report.population_load", "report.dhis2_mapping"} <= actions
    out = _ok(cli("reports", "coverage", "--cohort", str(year), "--jurisdiction", "PK"))
    assert "PENTA-3 coverage" in out


@pytest.fixture(scope="module")
def bigger_demo(tmp_path_factory):
    """A demo with enough children that Punjab's 2025 cells are not all suppressed."""
    tmp = tmp_path_factory.mktemp("reports-demo")
    url = fresh_database_url(tmp, "rdemo")
    run = Cli(url, tmp / "keyring")
    _ok(run("demo", "--no-serve", "--patients", "1500"))
    yield run
    drop_database(url)


def test_demo_dhis2_export_gives_values(bigger_demo):
    """The DHIS2 export of the demo, as the demo's provincial official (the country mapping is the
    fallback for Punjab), sends values; coverage against the target population has denominators."""
    cli = bigger_demo
    logins = json.loads((cli.key_dir / "demo-logins.json").read_text())
    settings = make_settings(cli.url, cli.key_dir)
    rt = Runtime.build(settings)
    try:
        with TestClient(create_app(settings, rt), raise_server_exceptions=False) as c:
            token = c.post("/api/v1/auth/token", data={"username": "official.punjab",
                                                       "password": logins["official.punjab"]["password"]}).json()["access_token"]
            h = {"Authorization": f"Bearer {token}"}
            year = str(date.today().year - 1)
            r = c.get("/api/v1/reports/coverage/export", params={"cohort": year, "format": "dhis2"}, headers=h)
            assert r.status_code == 200, r.status_code
            values = r.json()["dataValues"]
            assert all(v["period"] == year for v in values) and any(int(v["value"]) > 0 for v in values)
            punjab = next(u for code, u in _mapping(cli)["org_units"].items() if code == "PK-PB")
            assert any(v["orgUnit"] == punjab for v in values)
            r = c.get("/api/v1/reports/coverage", params={"cohort": year, "denominator": "target"}, headers=h)
            assert r.status_code == 200
            assert r.json()["total"]["target_population"] and r.json()["total"]["denominator"]
    finally:
        rt.engine.dispose()


def test_demo_refuses_production(tmp_path, monkeypatch):
    """Demo data (children, logins, target populations, the DHIS2 mapping) never reaches production."""
    from typer.testing import CliRunner

    from cli.main import app as cli_app
    from registry.settings import get_settings

    for k, v in {"NHR_ENV": "production", "NHR_DATABASE_URL": "postgresql://nhr@127.0.0.1:1/nhr",
                 "NHR_KEY_DIR": str(tmp_path / "keyring")}.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli_app, ["demo", "--no-serve"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2 and "refusing to load demo data in production" in result.output
    assert not (tmp_path / "keyring").exists()


def _mapping(cli) -> dict:
    from registry.reports.models import Dhis2Mapping

    [(document,)] = _rows(cli, select(Dhis2Mapping.document).where(Dhis2Mapping.jurisdiction_code == "PK"))
    return document


def test_population_load(cli, tmp_path):
    good = tmp_path / "pop.csv"
    before = _count(cli, TargetPopulation)
    year = date.today().year + 5  # a year the demo's figures do not cover
    good.write_text(f"jurisdiction_code,year,population\nPK-PB-LAH,{year},312000\nPK-SD-KRC,{year},410000\n")
    assert "loaded 2 target population figure(s)" in _ok(cli("reports", "population", "load", str(good)))
    assert _count(cli, TargetPopulation) == before + 2
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
