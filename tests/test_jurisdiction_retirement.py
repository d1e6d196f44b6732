"""`nhr jurisdictions retire CODE` (issue 15): what retired means, tested.

- Refused for an unknown code, the country, or a node with active places or facilities below it
  unless --cascade (which retires the subtree and its facilities); nothing is retired on a refusal.
- Once retired: no new registration or move into it (422 naming `district`), no new account bound
  to it or its facilities, no new facility or place under it; its patients stay readable and
  reports still count them. Loading the node again reactivates it. Audited as the CLI.
- A running API sees a retirement made by another process within the cache's MAX_AGE.
"""

from __future__ import annotations

import secrets

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from cli import reference as cli
from registry import reference_data
from registry.facilities.models import Facility
from registry.jurisdictions.models import Jurisdiction
from registry.reports.catalogue import CHILDREN
from registry.reports.models import CoverageCount
from registry.users.schemas import UserCreate
from registry.users.service import create_user
from tests.conftest import PASSWORD, audit_events, new_child


@pytest.fixture
def place(runtime, world, monkeypatch):
    """A new district with a tehsil, a facility in each, a clinic account at the district's facility."""
    monkeypatch.setattr(cli, "_runtime", lambda: runtime)
    t = secrets.token_hex(3).upper()
    d = f"PK-PB-R{t}"
    rows = [{"code": d, "name": f"District {t}", "level": "district", "parent_code": "PK-PB"},
            {"code": f"{d}-T1", "name": f"Tehsil {t}", "level": "tehsil", "parent_code": d}]
    with runtime.sessions.begin() as s:
        reference_data.apply_jurisdictions(s, rows)
        reference_data.apply_facilities(s, [{"code": f"F-R{t}", "name": "BHU", "kind": "bhu", "jurisdiction_code": d},
                                            {"code": f"F-R{t}-T", "name": "RHC", "kind": "rhc", "jurisdiction_code": f"{d}-T1"}])
        username = f"clinic.r{t.lower()}"
        create_user(s, runtime, UserCreate(username=username, display_name="clinic", password=PASSWORD, role="clinic_worker",
                                           scope_code=f"F-R{t}"))
    world.users["clinic_r"] = username
    return {"district": d, "tehsil": f"{d}-T1", "facilities": [f"F-R{t}", f"F-R{t}-T"], "tag": t}


def _retire(*args):
    return CliRunner().invoke(cli.jurisdictions_app, ["retire", *args])


def _active(runtime, model, code) -> bool:
    with runtime.sessions() as s:
        return s.get(model, code).active


def test_refusals_retire_nothing(runtime, place):
    for code, why in ((place["district"], "give --cascade"), ("PK", "country cannot be retired"), ("PK-NOWHERE", "no jurisdiction")):
        result = _retire(code)
        assert result.exit_code == 1 and why in result.output and "nothing retired" in result.output, result.output
    assert _active(runtime, Jurisdiction, place["district"]) and _active(runtime, Jurisdiction, place["tehsil"])
    assert all(_active(runtime, Facility, f) for f in place["facilities"])


def test_a_leaf_without_facilities_retires_alone(runtime, place):
    with runtime.sessions.begin() as s:
        reference_data.retire_facility(s, place["facilities"][1])
    result = _retire(place["tehsil"])
    assert result.exit_code == 0 and "retired (1 place(s) and 0 facilities)" in result.output
    assert not _active(runtime, Jurisdiction, place["tehsil"]) and _active(runtime, Jurisdiction, place["district"])
    assert "was already retired" in _retire(place["tehsil"]).output


def test_cascade_retires_the_subtree_and_what_retired_means(runtime, world, place):
    d = place["district"]
    kept = [world.register("clinic_r", district=d, birth_date="2026-03-01") for _ in range(5)]
    result = _retire(d, "--cascade")
    assert result.exit_code == 0 and "retired (2 place(s) and 2 facilities)" in result.output, result.output
    assert not _active(runtime, Jurisdiction, place["tehsil"])
    assert not any(_active(runtime, Facility, f) for f in place["facilities"])
    [event] = audit_events(runtime, action="jurisdiction.retire", resource_id=d)
    assert event.outcome == "success" and event.detail["cascade"] is True
    runtime.jurisdictions.refresh()  # what a running API does within MAX_AGE (test below)

    # no new registration into it: 422 naming the field (elsewhere is fine: the control)
    assert world.client.post("/api/v1/patients", json=new_child(), headers=world.h("clinic_a")).status_code == 201
    r = world.client.post("/api/v1/patients", json=new_child(district=d), headers=world.h("clinic_a"))
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    assert "district" in str(r.json()) and "retired" in str(r.json())
    # no new account bound to it or to its facilities, no new facility or place under it
    for scope, role in ((d, "health_official"), (place["facilities"][0], "clinic_worker")):
        with runtime.sessions.begin() as s, pytest.raises(Exception, match="retired"):
            create_user(s, runtime, UserCreate(username=f"late.{secrets.token_hex(3)}", display_name="late", password=PASSWORD,
                                               role=role, scope_code=scope))
    with runtime.sessions.begin() as s, pytest.raises(reference_data.ReferenceFileError, match="retired"):
        reference_data.apply_facilities(s, [{"code": f"F-N{place['tag']}", "name": "New", "kind": "bhu", "jurisdiction_code": d}])
    with runtime.sessions.begin() as s, pytest.raises(reference_data.ReferenceFileError, match="retired"):
        reference_data.apply_jurisdictions(s, [{"code": f"{d}-T2", "name": "New", "level": "tehsil", "parent_code": d}])
    # still readable, and still counted in reports
    r = world.client.get(f"/api/v1/patients/{kept[0]['id']}", headers=world.h("official_national"))
    assert r.status_code == 200
    r = world.client.get("/api/v1/reports/coverage", params={"jurisdiction": "PK-PB", "cohort": "2026"},
                         headers=world.h("official_national"))  # folds queued changes into the aggregates
    assert r.status_code == 200 and d in {row["code"] for row in r.json()["rows"]}
    with runtime.sessions() as s:  # five children: the row is suppressed with its siblings, but counted
        counted = s.scalar(select(func.sum(CoverageCount.any_count)).where(CoverageCount.district == d,
                                                                           CoverageCount.item == CHILDREN))
    assert counted == 5
    # listed as retired only on request
    listed = CliRunner().invoke(cli.jurisdictions_app, ["list", "--under", d])
    assert d not in listed.output
    assert "retired" in CliRunner().invoke(cli.jurisdictions_app, ["list", "--under", d, "--retired"]).output
    # loading it again reactivates it
    with runtime.sessions.begin() as s:
        changes = reference_data.apply_jurisdictions(s, [{"code": d, "name": f"District {place['tag']}", "level": "district",
                                                          "parent_code": "PK-PB"}])
    assert changes.reactivated == [d] and _active(runtime, Jurisdiction, d)


def test_a_running_api_sees_a_retirement_within_max_age(runtime, place):
    d = place["district"]
    with runtime.sessions() as s:
        assert runtime.jurisdictions.get(d, s).active
    with runtime.sessions.begin() as s:  # as another process would: the cache is not told
        reference_data.retire_jurisdiction(s, d, cascade=True)
    with runtime.sessions() as s:
        assert runtime.jurisdictions.get(d, s).active  # still the cached node
        runtime.jurisdictions._loaded_at -= runtime.jurisdictions.MAX_AGE + 1  # as if MAX_AGE had passed
        assert not runtime.jurisdictions.get(d, s).active
