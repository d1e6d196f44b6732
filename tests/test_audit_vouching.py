"""The sealer vouches only for events the registry wrote (issue 18): event MACs, quarantined leaves.

The attack: anyone with INSERT on the database writes a false past access (framing an official);
without MACs the registry's own sealer would seal it and `nhr audit verify` certify it intact.
Forged events are tried at every offset from the latest checkpoint (before it beyond the grace,
within the grace, after it) with every kind of MAC (the registry's, none, random bytes, another
event's), and the API's own events, written on every path, must never be quarantined.
"""

from __future__ import annotations

import logging
import os
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from cli.main import app as cli_app
from conftest import drop_database, fresh_database_url, is_postgres, make_settings, new_child
from registry import bootstrap
from registry.audit_log import sealing
from registry.runtime import Runtime
from registry.settings import get_settings
from security.access.principal import AccessContext
from security.audit import event_mac, leaf, verify
from security.audit.sealer import BACKDATED, BAD_MAC, EVENTS, LEAVES, MISSING_MAC, SUBJECTS, latest_checkpoint
from security.audit.trail import SUCCESS, AuditTrail, PatientRef

GRACE = timedelta(minutes=10)
MARKER = "Zz-framed-official-7781"  # a value that must never be printed or logged


@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vouching")
    url = fresh_database_url(tmp, "vouching")
    runtime = Runtime.build(make_settings(url, tmp / "keyring", audit={"seal_grace_seconds": int(GRACE.total_seconds())}))
    bootstrap.init(runtime)
    yield runtime
    runtime.engine.dispose()
    drop_database(url)


def _trail() -> AuditTrail:
    return AuditTrail(AccessContext(None, "TREAT", "req-vouching", "10.0.0.9"))


def _genuine(rt, n: int = 1) -> list[dict]:
    """Events written the registry's way (AuditTrail.record, MACed)."""
    trail, ids = _trail(), []
    with rt.sessions.begin() as s:
        for _ in range(n):
            ids.append(trail.record(s, "patient.read", SUCCESS, resource_id=uuid.uuid4(),
                                    patient=PatientRef(uuid.uuid4(), "PK-PB", "PK-PB-LAH"), subjects=[uuid.uuid4()]))
    with rt.sessions() as s:
        return [dict(r._mapping) for r in s.execute(select(EVENTS).where(EVENTS.c.id.in_(ids)))]


def _forged(when, **extra) -> dict:
    row = _trail().build("patient.read", SUCCESS, resource_id=uuid.uuid4(), patient=PatientRef(uuid.uuid4(), "PK-PB", "PK-PB-LAH"),
                         detail={"note": MARKER})
    row.update(occurred_at=when, actor_username=MARKER, **extra)
    return row


def _insert_directly(rt, row: dict) -> None:
    """As a database writer would: a plain INSERT, no registry code on the way."""
    with rt.sessions.begin() as s:
        s.execute(insert(EVENTS), [row])


def _seal_with_checkpoint(rt):
    _genuine(rt)
    assert sealing.seal_all(rt) >= 1
    with rt.sessions() as s:
        return latest_checkpoint(s)


OFFSETS = {"before_beyond_grace": -GRACE - timedelta(hours=3), "within_grace": -GRACE / 2, "after": timedelta(seconds=1)}
MACS = ("registry", "missing", "random", "another_event")
EXPECTED = {
    ("registry", "before_beyond_grace"): BACKDATED, ("registry", "within_grace"): None, ("registry", "after"): None,
    **{("missing", o): MISSING_MAC for o in OFFSETS}, **{("random", o): BAD_MAC for o in OFFSETS},
    **{("another_event", o): BAD_MAC for o in OFFSETS},
}


@pytest.mark.parametrize("offset", list(OFFSETS))
@pytest.mark.parametrize("mac", MACS)
def test_forged_event_at_every_offset(rt, mac, offset):
    """Only an event MACed with the registry's key and dated no earlier than the latest checkpoint
    minus the grace is vouched for; every other one is sealed as quarantined, with its reason."""
    cp = _seal_with_checkpoint(rt)
    row = _forged(cp.signed_at + OFFSETS[offset])
    if mac == "registry":  # a genuine event committed late (or a forger holding the key: see the README)
        rt.event_mac.sign(row)
    elif mac == "random":
        row["mac"] = os.urandom(32)
    elif mac == "another_event":
        row["mac"] = _genuine(rt)[0]["mac"]
    _insert_directly(rt, row)
    quarantined: list = []
    sealing.seal_all(rt, quarantined=quarantined)
    with rt.sessions() as s:
        position, reason = s.execute(select(LEAVES.c.position, LEAVES.c.quarantine).where(LEAVES.c.event_id == row["id"])).one()
    assert reason == EXPECTED[(mac, offset)]
    assert ((position, reason) in quarantined) == (reason is not None)
    report = sealing.verify_database(rt)  # the log itself is intact either way: the mark is part of it
    assert ((position, str(row["id"]), reason) in report.quarantined) == (reason is not None)


def test_subjects_added_to_a_genuine_event_break_its_mac(rt):
    """The MAC covers the subject list: adding a child to a real list view frames its reader."""
    _seal_with_checkpoint(rt)
    event = _genuine(rt)[0]
    with rt.sessions.begin() as s:
        s.execute(insert(SUBJECTS), [{"event_id": event["id"], "patient_id": uuid.uuid4()}])
    quarantined: list = []
    sealing.seal_all(rt, quarantined=quarantined)
    assert [r for _, r in quarantined] == [BAD_MAC]


def test_genuine_events_are_vouched_for(rt):
    _seal_with_checkpoint(rt)
    events = _genuine(rt, 5)
    quarantined: list = []
    assert sealing.seal_all(rt, quarantined=quarantined) == 5
    assert quarantined == []
    assert all(len(e["mac"]) == 32 for e in events)


def test_quarantine_mark_cannot_be_removed_or_added(rt):
    """The reason is bound into the leaf hash: laundering a forged event (clearing the mark) or
    discrediting a genuine one (setting it) is a discrepancy."""
    cp = _seal_with_checkpoint(rt)
    forged = _forged(cp.signed_at - timedelta(hours=5))
    _insert_directly(rt, forged)
    sealing.seal_all(rt)
    genuine = _genuine(rt)[0]
    sealing.seal_all(rt)
    pg = is_postgres(rt)
    for sql in ("UPDATE audit_log_leaves SET quarantine = NULL WHERE event_id = :f",
                "UPDATE audit_log_leaves SET quarantine = 'bad_mac' WHERE event_id = :g"):
        with rt.engine.connect() as conn, conn.begin():
            if pg:
                conn.execute(text("ALTER TABLE audit_log_leaves DISABLE TRIGGER USER"))
            else:
                conn.execute(text("DROP TRIGGER IF EXISTS nhr_audit_log_leaves_no_update"))
            ids = {"f": forged["id"] if pg else forged["id"].hex, "g": genuine["id"] if pg else genuine["id"].hex}
            assert conn.execute(text(sql), ids).rowcount == 1
            with Session(bind=conn) as s, pytest.raises(verify.Discrepancy, match="leaf hash"):
                verify.verify_database(s, sealing.origin(rt), sealing.public_key(rt), isolate=False)
            conn.rollback()
    sealing.verify_database(rt)


def _cli(rt, *args):
    env = {"NHR_DATABASE_URL": rt.settings.database_url, "NHR_KEY_DIR": str(rt.settings.key_dir), "NHR_ENV": "test",
           "NHR_AUDIT_SEAL_GRACE_SECONDS": str(int(GRACE.total_seconds()))}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        get_settings.cache_clear()
        try:
            return CliRunner().invoke(cli_app, ["audit", *args], catch_exceptions=False)
        finally:
            get_settings.cache_clear()


def test_framing_an_official_is_reported_not_certified(rt, caplog, tmp_path):
    """The issue's attack end to end: an access dated hours back, written straight into the
    database, then `nhr audit seal` and `nhr audit verify`. Verify does not certify it (exit 3, the
    position listed); the sealer counts it in a metric and logs it; nothing prints its values."""
    cp = _seal_with_checkpoint(rt)
    forged = _forged(cp.signed_at - timedelta(hours=6))
    _insert_directly(rt, forged)
    before = REGISTRY.get_sample_value("nhr_audit_quarantined_events_total", {"reason": MISSING_MAC}) or 0
    with caplog.at_level(logging.WARNING, logger="nhr.audit.sealer"):
        sealed = _cli(rt, "seal")
    assert sealed.exit_code == 0 and "quarantined" in sealed.output, sealed.output
    assert REGISTRY.get_sample_value("nhr_audit_quarantined_events_total", {"reason": MISSING_MAC}) == before + 1
    assert "quarantined" in caplog.text and MARKER not in caplog.text
    with rt.sessions() as s:
        position = s.execute(select(LEAVES.c.position).where(LEAVES.c.event_id == forged["id"])).scalar_one()
    r = _cli(rt, "verify")
    assert r.exit_code == 3, r.output
    assert f"position {position}: event {forged['id']} quarantined (missing_mac)" in r.output.replace("\n", " ")
    assert MARKER not in r.output + sealed.output
    # Offline, from an export: the same finding (the mark is in the export and in the leaf hash).
    export = tmp_path / "log.ndjson"
    assert _cli(rt, "export", str(export)).exit_code == 0
    offline = verify.verify_export(export, sealing.public_key(rt))
    assert (position, str(forged["id"]), MISSING_MAC) in offline.quarantined


def test_mac_is_not_in_the_leaf_and_differs_per_event(rt):
    a, b = _genuine(rt, 2)
    assert a["mac"] != b["mac"]
    key = rt.event_mac
    assert key.tag(a, []) != a["mac"], "the subjects are covered"
    assert "mac" not in leaf.FIELDS
    assert repr(key) == "EventMac(<key>)"
    assert event_mac.SECRET_NAME in __import__("security.crypto.keyring", fromlist=["SECRET_NAMES"]).SECRET_NAMES


def test_api_events_on_every_write_path_are_vouched_for(world, client, runtime, tmp_path):
    """Sync and async paths, refusals replayed after a rollback, the set-based batch writer, a failed
    login, the bulk importer (COPY on PostgreSQL): every event written is sealed without quarantine."""
    import csv

    from registry.bulk import importer, sources

    child = world.register()
    pid = child["id"]
    assert client.get(f"/api/v1/patients/{pid}", headers=world.h("clinic_a")).status_code == 200
    assert client.get(f"/api/v1/patients/{pid}", headers=world.h("clinic_c")).status_code == 404  # refusal
    assert client.get(f"/api/v1/patients/{uuid.uuid4()}", headers=world.h("clinic_a")).status_code == 404
    assert client.post("/api/v1/patients/search", json={"system": "bform", "value": child["_input"]["bform"]},
                       headers=world.h("clinic_c")).status_code == 200
    assert client.get("/api/v1/patients", headers=world.h("clinic_a")).status_code == 200
    assert client.post(f"/api/v1/patients/{pid}/immunizations", headers=world.h("clinic_a"),
                       json={"vaccine": "BCG", "dose_number": 1, "date_given": "2026-06-02"}).status_code == 201
    batch = {"items": [{"op": "dose.record", "patient_id": pid,
                        "data": {"id": str(uuid.uuid4()), "vaccine": "OPV", "dose_number": 0, "date_given": "2026-06-02"}}]}
    assert client.post("/api/v1/sync/batch", json=batch, headers=world.h("clinic_a")).status_code == 200
    assert client.post("/api/v1/auth/token", data={"username": world.users["clinic_b"], "password": "wrong"}).status_code == 401
    with open(tmp_path / "patients.csv", "w", newline="") as f:
        w = csv.DictWriter(f, list(sources.PATIENT_COLUMNS))
        w.writeheader()
        for c in (new_child(), new_child()):
            w.writerow({"id": str(uuid.uuid4()), "given_name": c["given_name"], "family_name": c["family_name"], "sex": "female",
                        "birth_date": "2026-06-01", "bform": c["bform"], "cnic": "", "guardian_name": c["guardian"]["name"],
                        "guardian_relationship": "mother", "guardian_cnic": c["guardian"]["cnic"], "phone": c["phone"],
                        "address": c["address"], "district": ""})
    assert importer.run(runtime, tmp_path / "patients.csv", username=world.users["clinic_a"]).imported == 2
    sealing.seal_all(runtime)
    names = list(world.users.values())
    with runtime.sessions() as s:
        rows = s.execute(select(EVENTS.c.action, EVENTS.c.outcome, LEAVES.c.quarantine)
                         .outerjoin(LEAVES, LEAVES.c.event_id == EVENTS.c.id)
                         .where(EVENTS.c.actor_username.in_(names) | (EVENTS.c.patient_id == uuid.UUID(pid)))).all()
    actions = {(a, o) for a, o, _ in rows}
    assert {("patient.read", "success"), ("patient.read", "not_found"), ("immunization.create", "success"),
            ("patient.import", "success")} <= actions
    assert len(rows) >= 8
    assert [(a, o, q) for a, o, q in rows if q is not None] == []


def test_inclusion_proof_states_the_quarantine_and_binds_it(rt):
    """Auditors see the status through the API too: an inclusion proof of a quarantined event says
    so, checks offline, and no longer checks if the mark is dropped from it. (On this module's own
    database: the shared one must stay free of forged events.)"""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from conftest import build_world

    with TestClient(create_app(rt.settings, rt), raise_server_exceptions=False) as client:
        _proof_of_a_quarantined_event(rt, build_world(client, rt), client)


def _proof_of_a_quarantined_event(runtime, world, client):
    from security.audit.proof_check import ProofRejected, check_inclusion

    forged = _forged(datetime.now(UTC) - timedelta(days=1))
    _insert_directly(runtime, forged)
    sealing.seal_all(runtime)
    r = client.get(f"/api/v1/audit/events/{forged['id']}/proof", headers=world.h("auditor"))
    assert r.status_code == 200, r.json()
    proof = r.json()
    assert proof["quarantine"] == MISSING_MAC
    with runtime.sessions() as s:
        row = s.execute(select(EVENTS).where(EVENTS.c.id == forged["id"])).one()._mapping
    record = {"event": dict(zip(leaf.FIELDS, leaf.canonical_fields(row))), "subjects": []}
    assert "QUARANTINED (missing_mac)" in check_inclusion(proof, sealing.public_key(runtime), record)
    with pytest.raises(ProofRejected):
        check_inclusion({**proof, "quarantine": None}, sealing.public_key(runtime), record)
