"""`nhr audit verify` never crashes on a row it cannot read (issue 18): an impossible date, a
malformed UUID, broken JSON, a value of the wrong type. It reports the position as damaged, exits 1
and prints no stored value.

SQLite stores whatever it is given, so every case is possible there; PostgreSQL's column types
refuse most of them at write time, so there only the cases it can hold run (JSON of the wrong shape).
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner

from cli.main import app as cli_app
from conftest import PG_URL, drop_database, fresh_database_url, make_settings
from registry import bootstrap
from registry.audit_log import sealing
from registry.runtime import Runtime
from registry.settings import get_settings
from security.access.principal import AccessContext
from security.audit.sealer import LEAVES
from security.audit.trail import SUCCESS, AuditTrail, PatientRef

MARKER = "Qq-stored-value-5517"
_EVENT_COLUMNS = ("id, occurred_at, request_id, client_address, actor_user_id, actor_username, actor_role, actor_scope_level, "
                  "actor_scope_code, actor_province, actor_district, action, resource_type, resource_id, patient_id, "
                  "patient_province, patient_district, outcome, purpose_of_use, break_glass, break_glass_reason, "
                  "outside_capture_scope, detail")

# name -> (SQL with :id for the sealed event at position 1, column reported, runs on PostgreSQL)
DAMAGE = {
    "impossible_date": ("UPDATE audit_events SET occurred_at = '2026-02-31 25:61:00.{m}' WHERE id = :id", "occurred_at", False),
    "malformed_uuid": ("UPDATE audit_events SET patient_id = '{M}' WHERE id = :id", "patient_id", False),
    "broken_json": ("UPDATE audit_events SET detail = '{{\"{M}\": ' WHERE id = :id", "detail", False),
    "wrong_type_int": ("UPDATE audit_events SET occurred_at = 4242455170 WHERE id = :id", "occurred_at", False),
    "wrong_type_bool": ("UPDATE audit_events SET break_glass = '{M}' WHERE id = :id", "break_glass", False),
    "wrong_type_json": ("UPDATE audit_events SET detail = '[\"{M}\"]' WHERE id = :id", "detail", True),
    "json_number": ("UPDATE audit_events SET detail = '4242455170' WHERE id = :id", "detail", True),
    "subject_uuid": ("UPDATE audit_event_subjects SET patient_id = '{M}' WHERE event_id = :id", "patient_id", False),
}


@pytest.fixture
def sealed(tmp_path):
    url = fresh_database_url(tmp_path, "damaged")
    rt = Runtime.build(make_settings(url, tmp_path / "keyring"))
    bootstrap.upgrade(url)
    trail = AuditTrail(AccessContext(None, "TREAT", "req-damaged", "10.0.0.7"))
    with rt.sessions.begin() as s:
        for _ in range(3):
            trail.record(s, "patient.read", SUCCESS, resource_id=uuid.uuid4(), patient=PatientRef(uuid.uuid4(), "PK-PB", "PK-PB-LAH"),
                         subjects=[uuid.uuid4()], detail={"n": 1})
    sealing.seal_all(rt)
    with rt.sessions() as s:
        event_id = s.execute(select(LEAVES.c.event_id).where(LEAVES.c.position == 1)).scalar_one()
    yield rt, event_id
    rt.engine.dispose()
    drop_database(url)


def _tamper(rt, sql: str, params: dict) -> None:
    pg = rt.engine.dialect.name == "postgresql"
    with rt.engine.begin() as conn:
        for t in ("audit_events", "audit_event_subjects", "audit_checkpoints"):
            if pg:
                conn.execute(text(f"ALTER TABLE {t} DISABLE TRIGGER USER"))
            else:
                conn.execute(text(f"DROP TRIGGER IF EXISTS nhr_{t}_no_update"))
        conn.execute(text(sql), params)


def _verify(rt):
    env = {"NHR_DATABASE_URL": rt.settings.database_url, "NHR_KEY_DIR": str(rt.settings.key_dir), "NHR_ENV": "test"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        get_settings.cache_clear()
        try:
            return CliRunner().invoke(cli_app, ["audit", "verify"], catch_exceptions=True)
        finally:
            get_settings.cache_clear()


def _check(result, *expected: str) -> None:
    out = result.output.replace("\n", " ")
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 1, out
    assert "damaged" in out and "Traceback" not in out, out
    for e in expected:
        assert e in out, out
    assert MARKER not in out and "4242455170" not in out, "a stored value was printed"


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_sealed_row_is_reported_by_position(sealed, case):
    sql, column, on_pg = DAMAGE[case]
    if PG_URL and not on_pg:
        pytest.skip("PostgreSQL's column type refuses this value at write time")
    rt, event_id = sealed
    pg = rt.engine.dialect.name == "postgresql"
    _tamper(rt, sql.format(M=MARKER, m=MARKER[-4:]), {"id": event_id if pg else event_id.hex})
    _check(_verify(rt), "position 1:", column)


def test_damaged_unsealed_row_is_reported_by_row(sealed):
    """An unreadable row no leaf names yet (inserted, never sealed): its table and row number."""
    if PG_URL:
        pytest.skip("PostgreSQL's column types refuse an impossible date at write time")
    rt, _ = sealed
    values = (f"'{uuid.uuid4().hex}', '2026-13-45 99:99:99', 'r', NULL, NULL, '{MARKER}', NULL, NULL, NULL, NULL, NULL, "
              "'patient.read', 'Patient', NULL, NULL, NULL, NULL, 'success', NULL, 0, NULL, 0, '{}'")
    with rt.engine.begin() as conn:
        conn.execute(text(f"INSERT INTO audit_events ({_EVENT_COLUMNS}) VALUES ({values})"))
    _check(_verify(rt), "audit_events row 3 (unsealed)", "occurred_at")


def test_damaged_checkpoint_is_reported(sealed):
    if PG_URL:
        pytest.skip("PostgreSQL's column types refuse an impossible date at write time")
    rt, _ = sealed
    _tamper(rt, f"UPDATE audit_checkpoints SET signed_at = '{MARKER}'", {})
    _check(_verify(rt), "audit_checkpoints row 0", "signed_at")


def test_every_damaged_row_is_listed(sealed):
    """Not just the first: an auditor sees the extent of the damage in one run."""
    if PG_URL:
        pytest.skip("PostgreSQL's column types refuse these values at write time")
    rt, event_id = sealed
    with rt.sessions() as s:
        other = s.execute(select(LEAVES.c.event_id).where(LEAVES.c.position == 2)).scalar_one()
    _tamper(rt, "UPDATE audit_events SET occurred_at = 'x' WHERE id IN (:a, :b)", {"a": event_id.hex, "b": other.hex})
    _check(_verify(rt), "2 damaged row(s)", "position 1:", "position 2:")


@pytest.mark.parametrize("damage", ["occurred_at", "subject"])
def test_an_unreadable_unsealed_row_does_not_stall_the_sealer(sealed, damage):
    """Written behind the registry's back, an unreadable row must not stop sealing: it is skipped
    and counted; the genuine events around it are sealed; verify reports it as damaged."""
    if PG_URL:
        pytest.skip("PostgreSQL's column types refuse these values at write time")
    rt, _ = sealed
    bad_id = uuid.uuid4()
    occurred = "'2026-13-45 99:99:99'" if damage == "occurred_at" else "'2026-01-01 00:00:00.000000'"
    values = (f"'{bad_id.hex}', {occurred}, 'r', NULL, NULL, '{MARKER}', NULL, NULL, NULL, NULL, NULL, "
              "'patient.read', 'Patient', NULL, NULL, NULL, NULL, 'success', NULL, 0, NULL, 0, '{}'")
    with rt.engine.begin() as conn:
        conn.execute(text(f"INSERT INTO audit_events ({_EVENT_COLUMNS}) VALUES ({values})"))
        if damage == "subject":
            conn.execute(text(f"INSERT INTO audit_event_subjects (event_id, patient_id) VALUES ('{bad_id.hex}', '{MARKER}')"))
    trail = AuditTrail(AccessContext(None, "TREAT", "req-damaged", "10.0.0.7"))
    with rt.sessions.begin() as s:
        good = trail.record(s, "patient.read", SUCCESS, resource_id=uuid.uuid4())
    result = sealing.seal_once(rt)
    assert result is not None and result.sealed == 1 and result.unreadable == 1
    with rt.sessions() as s:
        assert s.execute(select(LEAVES.c.quarantine).where(LEAVES.c.event_id == good)).scalar_one() is None
    assert sealing.seal_all(rt) == 0  # the unreadable row stays out; nothing loops
    _check(_verify(rt), "audit_events row" if damage == "occurred_at" else "audit_event_subjects")
