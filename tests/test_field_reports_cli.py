"""`nhr reports refusals` and `nhr reports data-quality` on a demo database of their own: the
tables print, each run is one audited `system:cli` read, and a bad argument is refused."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from registry.runtime import Runtime
from security.audit.models import AuditEventRow
from tests.conftest import make_settings
from tests.test_migrations_and_cli import Cli, _ok, drop_database, fresh_database_url


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("field-reports-cli")
    url = fresh_database_url(tmp, "fcli")
    run = Cli(url, tmp / "keyring")
    _ok(run("demo", "--no-serve", "--patients", "30"))
    yield run
    drop_database(url)


def _actions(cli) -> list[str]:
    rt = Runtime.build(make_settings(cli.url, cli.key_dir))
    try:
        with rt.sessions() as s:
            t = AuditEventRow.__table__
            return [r.action for r in s.execute(select(t.c.action).where(t.c.action.like("report.%")))]
    finally:
        rt.engine.dispose()


def test_tables_print_and_are_audited(cli):
    out = _ok(cli("reports", "refusals", "--cohort", "2025", "--jurisdiction", "PK-PB"))
    assert "Refusals and missed opportunities, Punjab, cohort 2025" in out
    out = _ok(cli("reports", "data-quality", "--jurisdiction", "PK-PB", "--from", "2025-01-01", "--to", "2025-12-31"))
    assert "Data quality, Punjab, 2025-01-01 to 2025-12-31" in out
    actions = _actions(cli)
    assert actions.count("report.refusals") == 1 and actions.count("report.data_quality") == 1


def test_bad_arguments_are_refused(cli):
    result = cli("reports", "data-quality", "--from", "2025-13-01")
    assert result.exit_code == 1 and "refused" in result.output
    result = cli("reports", "refusals", "--cohort", "20x5")
    assert result.exit_code == 1 and "cohort" in result.output
