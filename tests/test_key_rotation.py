"""Rotation that finishes (issue 16): after `reencrypt` no row carries the old field-key version,
the old version is retired and deleted, and every read still works through the API; the job is
resumable and does not overwrite a concurrent write; retirement is refused while a row uses the
version. Runs in a database and keyring of its own (it rotates Punjab's keys)."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Integer, LargeBinary, func, select, update
from typer.testing import CliRunner

from api.app import create_app
from cli import keys as keys_cli
from registry import bootstrap
from registry.errors import Conflict
from registry.keys import reencrypt as job
from registry.keys.encrypted_columns import ENCRYPTED_TABLES, OTHER_KEYS
from registry.keys.status import retire, rows_using, status
from registry.runtime import Runtime
from security.crypto.data_keys import DataKeyRow
from security.crypto.errors import KeyUnavailable
from security.orm import Base
from tests.conftest import audit_events, build_world, drop_database, fresh_database_url, make_settings

BG = "/api/v1/audit/break-glass"
OVERRIDE = "given early on the district officer's written instruction"
NOTE = "Confirmed with the facility register: emergency admission."


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rotation")
    url = fresh_database_url(tmp, "rotation")
    settings = make_settings(url, tmp / "keyring")
    rt = Runtime.build(settings)
    bootstrap.init(rt)
    with TestClient(create_app(settings, rt), raise_server_exceptions=False) as client:
        yield rt, client
    rt.engine.dispose()
    drop_database(url)


def _populate(w, n: int = 7) -> dict:
    """Punjab children (one with an overridden dose, one read in an emergency and reviewed with a
    note), and a Sindh child; returns what the API answered for each, to compare later."""
    out = {"punjab": [w.register("clinic_a") for _ in range(n)], "sindh": w.register("clinic_c")}
    pid = out["punjab"][0]["id"]
    r = w.client.post(f"/api/v1/patients/{pid}/immunizations", headers=w.h("clinic_a"),
                      json={"vaccine": "PENTA", "dose_number": 1, "date_given": "2026-06-10", "override_reason": OVERRIDE})
    assert r.status_code == 201, r.json()
    out["dose"] = r.json()
    r = w.client.get(f"/api/v1/patients/{pid}", headers=w.h("clinic_c", **{"X-Break-Glass-Reason": "unconscious, no card"}))
    assert r.status_code == 200
    bg = audit_events(w.runtime, patient_id=uuid.UUID(pid), break_glass=True)[0]
    r = w.client.post(f"{BG}/{bg.id}/finding", json={"finding": "justified", "note": NOTE}, headers=w.h("auditor_province"))
    assert r.status_code == 201, r.json()
    out["finding"] = str(bg.id)
    return out


def _reads_match(w, data: dict) -> None:
    for who, p in [("clinic_a", p) for p in data["punjab"]] + [("clinic_c", data["sindh"])]:
        r = w.client.get(f"/api/v1/patients/{p['id']}", headers=w.h(who))
        assert r.status_code == 200, r.json()
        got = r.json()
        assert (got["given_name"], got["bform"], got["phone"], got["guardian"]["cnic"], got["version"]) == (
            p["given_name"], p["bform"], p["phone"], p["guardian"]["cnic"], p["version"])
        assert got["given_name"] == p["_input"]["given_name"]
    r = w.client.get(f"/api/v1/patients/{data['punjab'][0]['id']}/immunizations", headers=w.h("clinic_a"))
    assert r.status_code == 200 and [d.get("override_reason") for d in r.json()] == [OVERRIDE]
    r = w.client.get(BG, params={"status": "reviewed", "limit": 500}, headers=w.h("auditor"))
    review = {i["event"]["id"]: i["review"] for i in r.json()["items"]}[data["finding"]]
    assert review["note"] == NOTE and not review["note_unreadable"]


def _versions_in_use(rt, custodian: str) -> set[int]:
    return {u.version for u in status(rt) if u.custodian == custodian and u.values}


def test_every_encrypted_column_is_listed():
    """Every `*_ct` column of the models is either re-encrypted with its province's keys or
    named as being under another key: a new encrypted column cannot be forgotten."""
    in_models = {(t.name, c.name) for t in Base.metadata.tables.values() for c in t.columns if c.name.endswith("_ct")}
    listed = {(s.table, c) for s in ENCRYPTED_TABLES for c in s.columns}
    assert listed.isdisjoint(OTHER_KEYS)
    assert in_models == listed | set(OTHER_KEYS)
    for spec in ENCRYPTED_TABLES:
        cols = Base.metadata.tables[spec.table].columns
        assert all(isinstance(cols[c].type, LargeBinary) for c in spec.columns)
        assert spec.key in cols and spec.custodian in cols
        assert spec.row_version is None or isinstance(cols[spec.row_version].type, Integer)


def test_rotate_reencrypt_retire_delete_and_every_read_still_works(deployment):
    rt, client = deployment
    w = build_world(client, rt)
    data = _populate(w)
    old = rt.keys.active("PK-PB", "field").version
    sindh_before = _versions_in_use(rt, "PK-SD")
    with rt.engine.begin() as conn:
        new = rt.keys.rotate(conn, "PK-PB")
    assert new == old + 1 and _versions_in_use(rt, "PK-PB") == {old}

    with pytest.raises(Conflict, match="still protects"):
        retire(rt, "PK-PB", old, settle_seconds=0)

    out = job.reencrypt(rt, "PK-PB", batch_size=3)
    assert out.remaining == 0 and out.conflicts == 0
    assert set(out.per_table) == {"patients", "immunizations", "break_glass_reviews"}
    assert _versions_in_use(rt, "PK-PB") == {new}
    with rt.engine.connect() as c:
        assert rows_using(c, "PK-PB", old) == 0
        for spec in ENCRYPTED_TABLES:  # byte by byte: no value of Punjab still carries the old header
            t = Base.metadata.tables[spec.table]
            for col in spec.columns:
                blobs = c.execute(select(t.c[col]).where(t.c[spec.custodian] == "PK-PB", t.c[col].is_not(None))).scalars()
                assert all(int.from_bytes(b[1:5], "big") == new for b in blobs), (spec.table, col)
    assert _versions_in_use(rt, "PK-SD") == sindh_before  # another province is untouched
    _reads_match(w, data)  # If-Match versions unchanged too (compared in _reads_match)

    retire(rt, "PK-PB", old, delete=True, settle_seconds=0)
    with rt.engine.connect() as c:
        assert c.execute(select(func.count()).select_from(DataKeyRow).where(
            DataKeyRow.custodian == "PK-PB", DataKeyRow.purpose == "field", DataKeyRow.version == old)).scalar_one() == 0
    with pytest.raises(KeyUnavailable):  # gone from this process at once
        rt.keys.get("PK-PB", "field", old)
    _reads_match(w, data)
    fresh = Runtime.build(rt.settings)  # and from a process that starts now
    try:
        with TestClient(create_app(fresh.settings, fresh), raise_server_exceptions=False) as c2:
            w.client = c2
            _reads_match(w, data)
    finally:
        w.client = client
        fresh.engine.dispose()


def test_reencryption_is_resumable(deployment):
    rt, client = deployment
    w = build_world(client, rt)
    _populate(w, n=9)
    with rt.engine.begin() as conn:
        new = rt.keys.rotate(conn, "PK-PB")
    pending = job.pending_rows(rt, "PK-PB", new)
    assert pending >= 11
    first = job.reencrypt(rt, "PK-PB", batch_size=4, stop_after_batches=2)  # as if killed after two batches
    assert first.moved == 8 and first.remaining == pending - 8
    second = job.reencrypt(rt, "PK-PB", batch_size=4)
    assert second.moved == pending - 8 and second.remaining == 0  # nothing moved twice
    assert job.pending_rows(rt, "PK-PB", new) == 0


def test_a_concurrent_write_wins_over_the_job(deployment, monkeypatch):
    """The job's UPDATE requires the ciphertext it read: a write between its read and its update
    (here: injected into the decrypt step) is kept, and the row is not counted as moved."""
    rt, client = deployment
    if rt.engine.dialect.name == "sqlite":  # one writer at a time: the clinic's write cannot run inside the job's batch
        pytest.skip("SQLite serialises writers; the compare-and-swap is exercised on PostgreSQL")
    w = build_world(client, rt)
    child = w.register("clinic_a")
    with rt.engine.begin() as conn:
        rt.keys.rotate(conn, "PK-PB")
    real = rt.cipher.decrypt
    pid = uuid.UUID(child["id"])
    done = []

    def decrypt_then_someone_writes(blob, **where):
        if where["row_id"] == pid and not done:
            done.append(1)
            r = w.client.patch(f"/api/v1/patients/{child['id']}", json={"phone": "0300-1234567"},
                               headers=w.h("clinic_a", **{"If-Match": f'"{child["version"]}"'}))
            assert r.status_code == 200, r.json()
        return real(blob, **where)

    monkeypatch.setattr(rt.cipher, "decrypt", decrypt_then_someone_writes)
    out = job.reencrypt(rt, "PK-PB", batch_size=1000)
    assert done and out.conflicts >= 1 and out.remaining == 0
    monkeypatch.undo()
    got = w.client.get(f"/api/v1/patients/{child['id']}", headers=w.h("clinic_a")).json()
    assert got["phone"] == "+923001234567" and got["given_name"] == child["_input"]["given_name"]


def test_retirement_refusals_and_the_cli(deployment, monkeypatch):
    rt, client = deployment
    monkeypatch.setattr(keys_cli, "_runtime", lambda: rt)
    active = rt.keys.active("PK-PB", "field").version
    runner = CliRunner()
    r = runner.invoke(keys_cli_app(), ["retire", "--custodian", "PK-PB", "--version", str(active)])
    assert r.exit_code == 1 and "refused" in r.output  # the newest version is too young, and active
    r = runner.invoke(keys_cli_app(), ["status"])
    assert r.exit_code == 0 and "PK-PB" in r.output and f"v{active}" in r.output and "active" in r.output
    r = runner.invoke(keys_cli_app(), ["rotate", "--custodian", "PK-PB"])
    assert r.exit_code == 0 and f"v{active + 1}" in r.output
    r = runner.invoke(keys_cli_app(), ["reencrypt", "--custodian", "PK-PB", "--batch-size", "50"])
    assert r.exit_code == 0, r.output
    assert "moved to v" in r.output
    with pytest.raises(Conflict, match="less than"):
        retire(rt, "PK-PB", active)  # the default wait after a rotation
    retire(rt, "PK-PB", active, settle_seconds=0)
    with pytest.raises(Conflict, match="active"):
        retire(rt, "PK-PB", active + 1, settle_seconds=0)
    assert [e.action for e in audit_events(rt, action="keys.reencrypt")]
    r = runner.invoke(keys_cli_app(), ["rotate", "--custodian", "PK-XX"])
    assert r.exit_code == 1 and "not a province with keys" in r.output
    r = runner.invoke(keys_cli_app(), ["rotate-kek", "--custodian", "PK-KP", "--destroy-old"])
    assert r.exit_code == 0 and "destroyed" in r.output, r.output
    assert not (rt.settings.key_dir / "kek" / "PK-KP.key").exists() and rt.keys.kek.files.kek_versions("PK-KP") == [2]
    [event] = audit_events(rt, action="keys.rotate_kek", resource_id="PK-KP")
    assert event.detail["destroyed"] == ["file v1"]


def keys_cli_app():
    import typer

    app = typer.Typer()
    keys_cli.register(app)
    return app


def test_another_process_refuses_a_retired_version_after_its_reload(deployment):
    """A process that loaded the keys before the retirement drops the retired version at its next
    reload (at most DataKeyStore.MAX_AGE seconds later; here the clock is moved instead of waited)."""
    rt, client = deployment
    w = build_world(client, rt)
    w.register("clinic_a")
    other = Runtime.build(rt.settings)
    try:
        other.load_keys()
        old = other.keys.active("PK-PB", "field").version
        with rt.engine.begin() as conn:
            rt.keys.rotate(conn, "PK-PB")
        assert job.reencrypt(rt, "PK-PB").remaining == 0
        retire(rt, "PK-PB", old, settle_seconds=0)
        assert other.keys.get("PK-PB", "field", old)  # still cached: not yet reloaded
        assert other.keys.active("PK-PB", "field").version == old  # and still writing under it
        other.keys._loaded_at -= other.keys.MAX_AGE + 1
        with pytest.raises(KeyUnavailable):
            other.keys.get("PK-PB", "field", old)
        assert other.keys.active("PK-PB", "field").version == old + 1
    finally:
        other.engine.dispose()


def test_break_glass_notes_stay_append_only_except_for_reencryption(deployment):
    """Migration 0028 lets exactly one UPDATE through: `note_ct` to a newer key version, every other
    column unchanged. Rewriting the note under the same version, or changing anything else, is refused."""
    from registry.audit_log.models import BreakGlassReviewRow

    rt, client = deployment
    w = build_world(client, rt)
    data = _populate(w, n=1)
    t = BreakGlassReviewRow.__table__
    key = uuid.UUID(data["finding"])
    with rt.engine.connect() as c:
        note = c.execute(select(t.c.note_ct).where(t.c.event_id == key)).scalar_one()
    v = int.from_bytes(note[1:5], "big")
    same = note[:5] + bytes(len(note) - 5)  # another ciphertext under the same version
    newer = note[:1] + (v + 1).to_bytes(4, "big") + note[5:]
    for values in ({"note_ct": same}, {"note_ct": newer, "finding": "not_justified"}, {"note_ct": None}):
        with rt.engine.connect() as c:
            with pytest.raises(Exception, match="append-only"):
                c.execute(update(t).where(t.c.event_id == key).values(**values))
            c.rollback()
    with rt.engine.connect() as c:  # the allowed change (rolled back: this header names no real key)
        assert c.execute(update(t).where(t.c.event_id == key).values(note_ct=newer)).rowcount == 1
        c.rollback()


def test_kek_rotation_in_files_keeps_every_read(deployment):
    rt, client = deployment
    w = build_world(client, rt)
    data = _populate(w, n=2)
    with rt.engine.begin() as conn:
        new, unused = rt.keys.rewrap(conn, "PK-SD")
    assert unused and all(b == "file" for b, _ in unused) and new == max(g for _, g in unused) + 1
    for _, generation in unused:
        rt.keys.kek.destroy_kek("PK-SD", generation)
    assert rt.keys.kek.files.kek_versions("PK-SD") == [new]
    fresh = Runtime.build(rt.settings)  # unwraps Sindh's data keys under the new KEK only
    try:
        with TestClient(create_app(fresh.settings, fresh), raise_server_exceptions=False) as c2:
            w.client = c2
            _reads_match(w, data)
    finally:
        w.client = client
        fresh.engine.dispose()
