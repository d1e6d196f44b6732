"""The tamper-evident audit log on the database under test: append-only triggers, the sealer,
verification, the CLI and the proof API."""

from __future__ import annotations

import base64
import json
import threading
import uuid

import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner

from cli.main import app as cli_app
from registry.audit_log import sealing
from registry.settings import get_settings
from security.access.principal import AccessContext
from security.audit import leaf, merkle, verify
from security.audit.checkpoint import load_public_key
from security.audit.models import AuditEventRow
from security.audit.sealer import CHECKPOINTS, EVENTS, LEAVES, SUBJECTS, seal
from security.audit.trail import SUCCESS, AuditTrail, PatientRef

APPEND_ONLY = ("audit_events", "audit_event_subjects", "audit_log_leaves", "audit_checkpoints")


def _insert_events(rt, n: int) -> list[uuid.UUID]:
    trail = AuditTrail(AccessContext(None, "TREAT", "req-sealing-test", "127.0.0.1"))
    rows = [trail.build("patient.read", SUCCESS, resource_id=uuid.uuid4(), patient=PatientRef(uuid.uuid4(), "PK-PB", "PK-PB-LAH"),
                        detail={"i": i}) for i in range(n)]
    with rt.sessions.begin() as s:
        s.execute(insert(EVENTS), [rt.event_mac.sign(r, [r["patient_id"]]) for r in rows])
        s.execute(insert(SUBJECTS), [{"event_id": r["id"], "patient_id": r["patient_id"]} for r in rows])
    return [r["id"] for r in rows]


def test_leaf_encoding_covers_every_column():
    """Every column but the MAC, which is computed over the leaf (security/audit/event_mac.py)."""
    assert list(leaf.FIELDS) + ["mac"] == [c.name for c in AuditEventRow.__table__.columns]


def test_leaf_encoding_is_length_prefixed_and_null_distinct():
    fields = ["x"] * 23
    a = leaf.encode(fields[:22] + [None], [])
    b = leaf.encode(fields[:22] + [""], [])
    assert a != b and a.startswith(leaf.PREFIX)
    assert leaf.encode(["ab", "c"] + fields[2:], []) != leaf.encode(["a", "bc"] + fields[2:], [])


@pytest.mark.parametrize("table", APPEND_ONLY)
@pytest.mark.parametrize("statement", ["UPDATE {t} SET {c} = {c}", "DELETE FROM {t}"])
def test_audit_tables_are_append_only(runtime, table, statement):
    _insert_events(runtime, 2)
    sealing.seal_all(runtime)
    column = {"audit_events": "action", "audit_event_subjects": "patient_id", "audit_log_leaves": "leaf_hash",
              "audit_checkpoints": "key_id"}[table]
    with runtime.engine.connect() as c:
        assert c.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() > 0
        with pytest.raises(DBAPIError) as exc:
            c.execute(text(statement.format(t=table, c=column)))
        assert "append-only" in str(exc.value)
        c.rollback()


def test_api_events_are_sealed_at_consecutive_positions_and_verify(runtime, world):
    sealing.seal_all(runtime)
    for _ in range(3):
        world.register()
    result = sealing.seal_once(runtime)
    assert result is not None and result.sealed >= 3
    with runtime.sessions() as s:
        positions = s.execute(select(LEAVES.c.position).order_by(LEAVES.c.position)).scalars().all()
        assert positions == list(range(len(positions)))
        unsealed = s.execute(select(func.count()).select_from(EVENTS.outerjoin(LEAVES, LEAVES.c.event_id == EVENTS.c.id))
                             .where(LEAVES.c.event_id.is_(None))).scalar_one()
        assert unsealed == 0
        before = s.execute(select(func.count()).select_from(CHECKPOINTS)).scalar_one()
    assert sealing.seal_once(runtime) is None, "nothing new: no checkpoint"
    with runtime.sessions() as s:
        assert s.execute(select(func.count()).select_from(CHECKPOINTS)).scalar_one() == before
    report = sealing.verify_database(runtime)
    assert report.tree_size == len(positions) and report.unsealed == 0


def test_concurrent_sealers_never_share_a_position(runtime):
    sealing.seal_all(runtime)
    errors, results = [], []

    def work():
        try:
            for _ in range(5):
                _insert_events(runtime, 20)
                results.append(sealing.seal_once(runtime))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(type(exc).__name__)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sum(r.sealed for r in results if r) == 200
    sizes = [r.checkpoint.tree_size for r in results if r]
    assert len(sizes) == len(set(sizes))
    with runtime.sessions() as s:
        rows = s.execute(select(LEAVES.c.position, LEAVES.c.event_id)).all()
    assert len({p for p, _ in rows}) == len(rows) == len({e for _, e in rows})
    sealing.verify_database(runtime)


def test_verify_reports_an_unsealed_old_event(runtime):
    """Sealing only looks near the head in the background; an old event left unsealed is flagged."""
    _insert_events(runtime, 1)
    sealing.seal_all(runtime)
    with runtime.sessions() as s:
        snap = verify.snapshot_from_db(s, sealing.origin(runtime))
    fields = ["00000000-0000-4000-8000-000000000001", "2000-01-01T00:00:00.000000Z"] + ["x"] * 21
    snap.add_event(fields, [])
    with pytest.raises(verify.Discrepancy, match="00000000-0000-4000-8000-000000000001"):
        verify.verify_snapshot(snap, sealing.public_key(runtime), unsealed_before="2026-01-01")


def _auditor_get(world, path, **params):
    return world.client.get(path, params=params, headers=world.h("auditor", **{"X-Purpose-Of-Use": "HCOMPL"}))


def test_proof_api_inclusion_and_consistency_verify_offline(runtime, world):
    p = world.register()
    sealing.seal_all(runtime)
    first = _auditor_get(world, "/api/v1/audit/checkpoints/latest")
    assert first.status_code == 200, first.json()
    world.register()
    sealing.seal_all(runtime)
    cp = _auditor_get(world, "/api/v1/audit/checkpoints/latest").json()
    key = load_public_key(_auditor_get(world, "/api/v1/audit/public-key").json()["public_key_pem"])
    key.verify(base64.b64decode(cp["signature"]), cp["note_body"].encode())

    with runtime.sessions() as s:
        event_id = s.execute(select(EVENTS.c.id).where(EVENTS.c.resource_id == p["id"], EVENTS.c.action == "patient.create")).scalar_one()
    r = _auditor_get(world, f"/api/v1/audit/events/{event_id}/proof", tree_size=cp["tree_size"])
    assert r.status_code == 200, r.json()
    proof = r.json()
    merkle.verify_inclusion(proof["leaf_index"], cp["tree_size"], bytes.fromhex(proof["leaf_hash"]),
                            [bytes.fromhex(h) for h in proof["audit_path"]], base64.b64decode(cp["root_hash"]))

    m = first.json()["tree_size"]
    r = _auditor_get(world, "/api/v1/audit/consistency", first=m, second=cp["tree_size"])
    assert r.status_code == 200, r.json()
    merkle.verify_consistency(m, cp["tree_size"], base64.b64decode(first.json()["root_hash"]),
                              base64.b64decode(cp["root_hash"]), [bytes.fromhex(h) for h in r.json()["proof"]])
    assert "given_name" not in r.text and p["_input"]["given_name"] not in r.text


def test_proof_requests_are_audited_and_gated(runtime, world):
    sealing.seal_all(runtime)
    rid = uuid.uuid4().hex
    r = world.client.get("/api/v1/audit/public-key", headers=world.h("auditor", **{"X-Request-ID": rid}))
    assert r.status_code == 200
    with runtime.sessions() as s:
        events = s.execute(select(EVENTS).where(EVENTS.c.request_id == rid)).all()
    assert [(e.action, e.outcome) for e in events] == [("audit.proof", "success")]
    assert world.client.get("/api/v1/audit/checkpoints/latest", headers=world.h("clinic_a")).status_code == 403
    r = _auditor_get(world, f"/api/v1/audit/events/{uuid.uuid4()}/proof")
    assert r.status_code == 404
    assert _auditor_get(world, "/api/v1/audit/consistency", first=5, second=2).status_code in (404, 422)


def test_cli_seal_verify_export_public_key(runtime, world, tmp_path):
    world.register()
    runner = CliRunner()
    env = {"NHR_DATABASE_URL": runtime.settings.database_url, "NHR_KEY_DIR": str(runtime.settings.key_dir), "NHR_ENV": "test"}

    def run(*args):
        with pytest.MonkeyPatch.context() as mp:
            for k, v in env.items():
                mp.setenv(k, v)
            get_settings.cache_clear()
            try:
                return runner.invoke(cli_app, ["audit", *args], catch_exceptions=False)
            finally:
                get_settings.cache_clear()

    assert run("seal").exit_code == 0
    r = run("verify")
    assert r.exit_code == 0 and "intact" in r.output, r.output
    pem = run("public-key").output
    (tmp_path / "key.pem").write_text(pem)
    export = tmp_path / "log.ndjson"
    assert run("export", str(export)).exit_code == 0
    r = run("verify", "--export", str(export), "--public-key", str(tmp_path / "key.pem"))
    assert r.exit_code == 0, r.output
    lines = export.read_text().splitlines()
    first = json.loads(lines[1])  # the first event, whatever its outcome (other test files may have written a refusal)
    assert first["kind"] == "event"
    first["event"]["outcome"] = "denied" if first["event"]["outcome"] != "denied" else "success"
    lines[1] = json.dumps(first)
    export.write_text("\n".join(lines) + "\n")
    r = run("verify", "--export", str(export), "--public-key", str(tmp_path / "key.pem"))
    assert r.exit_code == 1 and "NOT INTACT" in r.output and "leaf hash" in r.output, r.output


def test_seal_refuses_when_leaves_and_checkpoint_disagree(runtime):
    """The sealer never extends a log whose stored state is inconsistent."""
    from security.audit.sealer import SealError

    _insert_events(runtime, 1)
    with runtime.sessions() as s:
        s.execute(insert(LEAVES).values(position=10**9, event_id=_insert_events(runtime, 1)[0], leaf_hash=b"\0" * 32))
        with pytest.raises(SealError):
            seal(s, sealing.signer(runtime), mac=runtime.event_mac, grace=sealing.grace(runtime))
        s.rollback()
