"""Provisioning with real reference data: files are checked whole before anything is written,
loading is idempotent and reports what changed, moving a node is refused, production never loads
the demo facilities, and a retired facility gets no new accounts."""

from __future__ import annotations

import secrets

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from registry import bootstrap, reference_data
from registry.facilities.models import Facility
from registry.jurisdictions.models import Jurisdiction
from registry.users.schemas import UserCreate
from registry.users.service import create_user
from tests.conftest import PASSWORD


def _tag() -> str:
    return secrets.token_hex(3).upper()


def _rows(text: str, columns) -> list[dict]:
    return reference_data.read_rows(text, columns, "test file")


def test_a_bad_file_is_reported_row_by_row_and_writes_nothing(runtime):
    t = _tag()
    text = ("code,name,level,parent_code\n"
            f"PK-PB-X{t},District {t},district,PK-PB\n"
            f"PK-PB-X{t}-T1,Tehsil,tehsil,PK-PB-X{t}\n"
            f"PK-PB-Y{t},Nowhere,district,PK-ZZ\n"          # row 4: unknown parent
            f"PK-PB-X{t},Again,district,PK-PB\n"            # row 5: repeated code
            f"PK-PB-Z{t},Odd,county,PK-PB\n"                # row 6: unknown level
            f"PK-PB-W{t},Wrong,union_council,PK-PB\n")      # row 7: level under the wrong parent
    with runtime.sessions.begin() as s, pytest.raises(reference_data.ReferenceFileError) as err:
        reference_data.apply_jurisdictions(s, _rows(text, reference_data.JURISDICTION_COLUMNS))
    assert [p.split(":")[0] for p in err.value.problems] == ["row 5", "row 4", "row 6", "row 7"]
    with runtime.sessions() as s:
        assert s.get(Jurisdiction, f"PK-PB-X{t}") is None


def test_loading_is_idempotent_and_says_what_changed(runtime):
    t = _tag()
    j = f"code,name,level,parent_code\nPK-PB-Q{t},District {t},district,PK-PB\n"
    f = f"code,name,kind,jurisdiction_code\nF-Q{t},BHU {t},bhu,PK-PB-Q{t}\n"
    for expected_added in (1, 0):
        with runtime.sessions.begin() as s:
            cj = reference_data.apply_jurisdictions(s, _rows(j, reference_data.JURISDICTION_COLUMNS))
            cf = reference_data.apply_facilities(s, _rows(f, reference_data.FACILITY_COLUMNS))
        assert len(cj.added) == len(cf.added) == expected_added
        assert cj.unchanged == cf.unchanged == 1 - expected_added
    with runtime.sessions.begin() as s:
        renamed = reference_data.apply_facilities(s, _rows(f.replace(f"BHU {t}", f"RHC {t}").replace(",bhu,", ",rhc,"),
                                                           reference_data.FACILITY_COLUMNS))
    assert renamed.renamed == [f"F-Q{t}"]
    moved = f"code,name,kind,jurisdiction_code\nF-Q{t},RHC {t},rhc,PK-PB-LAH\n"
    with runtime.sessions.begin() as s, pytest.raises(reference_data.ReferenceFileError, match="moving it is refused"):
        reference_data.apply_facilities(s, _rows(moved, reference_data.FACILITY_COLUMNS))
    moved_node = f"code,name,level,parent_code\nPK-PB-Q{t},District {t},district,PK-SD\n"
    with runtime.sessions.begin() as s, pytest.raises(reference_data.ReferenceFileError, match="moving a node is refused"):
        reference_data.apply_jurisdictions(s, _rows(moved_node, reference_data.JURISDICTION_COLUMNS))


def test_production_never_loads_the_demo_facilities(runtime, monkeypatch):
    monkeypatch.setattr(runtime.settings, "env", "production")
    with runtime.sessions() as s:
        before = s.scalar(select(func.count()).select_from(Facility))
    _, facilities = bootstrap.load_reference_data(runtime)
    assert facilities is None
    with runtime.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Facility)) == before


def test_a_retired_facility_gets_no_new_accounts(runtime, world):
    code = world.facilities["a2"]
    with runtime.sessions.begin() as s:
        assert reference_data.retire_facility(s, code) is True
        assert reference_data.retire_facility(s, code) is False
    with runtime.sessions.begin() as s, pytest.raises(Exception, match="retired"):
        create_user(s, runtime, UserCreate(username=f"late.{_tag().lower()}", display_name="late", password=PASSWORD,
                                           role="clinic_worker", scope_code=code))


def test_cli_refuses_a_bad_file_and_nothing_is_loaded(runtime, tmp_path, monkeypatch):
    from cli import reference as cli

    monkeypatch.setattr(cli, "_runtime", lambda: runtime)
    bad = tmp_path / "facilities.csv"
    t = _tag()
    bad.write_text(f"code,name,kind,jurisdiction_code\nF-G{t},Good,bhu,PK-PB-LAH\nF-B{t},Bad,castle,PK-PB-LAH\n")
    result = CliRunner().invoke(cli.facilities_app, ["load", str(bad)])
    assert result.exit_code == 1 and "row 3" in result.output and "nothing written" in result.output
    with runtime.sessions() as s:
        assert s.get(Facility, f"F-G{t}") is None
    good = tmp_path / "good.csv"
    good.write_text(f"code,name,kind,jurisdiction_code\nF-G{t},Good,bhu,PK-PB-LAH\n")
    result = CliRunner().invoke(cli.facilities_app, ["load", str(good)])
    assert result.exit_code == 0
    with runtime.sessions() as s:
        assert s.get(Facility, f"F-G{t}") is not None
