"""Witnessed checkpoints and key hand-overs (issue 16), end to end: a real registry served by
uvicorn on loopback, witnesses run as `nhr audit witness` against it, `nhr audit verify
--witnesses K` on the database under test (SQLite or PostgreSQL)."""

from __future__ import annotations

import base64
import contextlib
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import delete, insert, select, text
from typer.testing import CliRunner

from api.app import create_app
from cli.main import app as cli_app
from conftest import drop_database, fresh_database_url, make_settings
from registry import bootstrap
from registry.audit_log import sealing, transparency
from registry.runtime import Runtime
from registry.settings import get_settings
from security.access.principal import AccessContext
from security.audit import handover, note, verify, witness
from security.audit.checkpoint import Signer, public_key_pem
from security.audit.sealer import CHECKPOINTS, EVENTS, LEAVES, SUBJECTS, KeyHandedOver, seal
from security.audit.trail import SUCCESS, AuditTrail, PatientRef

AUDIT_TABLES = ("audit_events", "audit_event_subjects", "audit_log_leaves", "audit_checkpoints",
                "audit_cosignatures", "audit_key_handovers")


@dataclass
class Registry:
    rt: Runtime
    url: str
    tmp: Path
    witness_keys: list[Path]

    def env(self) -> dict:
        return {"NHR_DATABASE_URL": self.rt.settings.database_url, "NHR_KEY_DIR": str(self.rt.settings.key_dir),
                "NHR_ENV": "test", "NHR_AUDIT_WITNESSES_FILE": str(self.rt.settings.audit.witnesses_file),
                "NHR_AUDIT_SEAL_INTERVAL_SECONDS": "0"}

    def cli(self, *args: str):
        with pytest.MonkeyPatch.context() as mp:
            for k, v in self.env().items():
                mp.setenv(k, v)
            get_settings.cache_clear()
            try:
                return CliRunner().invoke(cli_app, ["audit", *args], catch_exceptions=False)
            finally:
                get_settings.cache_clear()

    def events(self, n: int = 3) -> None:
        trail = AuditTrail(AccessContext(None, "TREAT", "req-witness-test", "127.0.0.1"))
        with self.rt.sessions.begin() as s:
            for _ in range(n):
                trail.record(s, "patient.read", SUCCESS, resource_id=uuid.uuid4(),
                             patient=PatientRef(uuid.uuid4(), "PK-PB", "PK-PB-LAH"), subjects=[uuid.uuid4()])
        sealing.seal_all(self.rt)

    def log_vkey(self) -> str:
        return sealing.verifier(self.rt).vkey()

    def witness(self, i: int, *extra: str):
        args = ["witness", "--url", self.url, "--key", str(self.witness_keys[i]), "--state", str(self.tmp / f"w{i}.json")]
        if not (self.tmp / f"w{i}.json").exists():
            args += ["--log-key", self.log_vkey()]
        return self.cli(*args, *extra)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(tmp: Path, name: str, witnesses: int = 3):
    import uvicorn

    url = fresh_database_url(tmp, name)
    keys, vkeys = [], []
    for i in range(witnesses):
        k = note.generate(f"witness.example/w{i}", note.COSIGNATURE_V1)
        (tmp / f"w{i}.key").write_text(k.encode() + "\n")
        keys.append(tmp / f"w{i}.key")
        vkeys.append(k.verifier.vkey())
    (tmp / "witnesses.txt").write_text("# the registry's witnesses\n" + "\n".join(vkeys) + "\n")
    rt = Runtime.build(make_settings(url, tmp / "keyring", audit={"witnesses_file": tmp / "witnesses.txt"}))
    bootstrap.init(rt)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(rt.settings, rt), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the registry did not start"
    try:
        yield Registry(rt, f"http://127.0.0.1:{port}", tmp, keys)
    finally:
        server.should_exit = True
        thread.join(10)
        rt.engine.dispose()
        drop_database(url)


@pytest.fixture
def reg(tmp_path):
    with serving(tmp_path, "witness") as r:
        yield r


def _client(reg: Registry):
    import httpx

    return httpx.Client(base_url=reg.url, timeout=10)


def _rewrite_history(reg: Registry) -> None:
    """What an operator holding the database and the registry's signing key can do: remove an
    event, then rebuild every leaf and checkpoint and re-sign them with the registry's key."""
    with reg.rt.engine.begin() as c:
        if c.dialect.name == "postgresql":
            c.execute(text("SET LOCAL session_replication_role = replica"))  # triggers and foreign keys off
        else:
            for table in AUDIT_TABLES:
                for event in ("update", "delete"):
                    c.execute(text(f"DROP TRIGGER IF EXISTS nhr_{table}_no_{event}"))
        victim = c.execute(select(LEAVES.c.event_id).where(LEAVES.c.position == 1)).scalar_one()
        c.execute(text("DELETE FROM audit_cosignatures"))
        c.execute(delete(CHECKPOINTS))
        c.execute(delete(LEAVES))
        c.execute(delete(SUBJECTS).where(SUBJECTS.c.event_id == victim))
        c.execute(delete(EVENTS).where(EVENTS.c.id == victim))
    sealing.seal_all(reg.rt)


# --- the published checkpoint ------------------------------------------------------------------

def test_checkpoint_is_a_c2sp_signed_note_under_the_published_key(reg):
    reg.events(5)
    with _client(reg) as c:
        r = c.get("/api/v1/transparency/checkpoint")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        handovers = c.get("/api/v1/transparency/key-handovers").json()
    assert handovers["handovers"] == [] and handovers["current_key"] == reg.log_vkey()
    text_, good = note.open_note(r.text, [note.parse_vkey(handovers["current_key"])])
    cp = note.parse_checkpoint(text_)
    assert cp.origin == "nhr/PK" and cp.tree_size == 5
    assert len(good) == 1


def test_consistency_endpoint_serves_a_verifiable_proof(reg):
    reg.events(3)
    reg.events(4)
    with _client(reg) as c:
        r = c.get("/api/v1/transparency/consistency", params={"from": 3, "to": 7})
        bad = c.get("/api/v1/transparency/consistency", params={"from": 7, "to": 3})
    assert r.status_code == 200 and r.json()["from"] == 3
    with reg.rt.sessions() as s:
        a, b = (s.execute(select(CHECKPOINTS.c.root_hash).where(CHECKPOINTS.c.tree_size == n)).scalar_one() for n in (3, 7))
    from security.audit.merkle import verify_consistency

    verify_consistency(3, 7, bytes(a), bytes(b), [base64.b64decode(h) for h in r.json()["proof"]])
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("application/problem+json")
    assert "from" in bad.text


# --- witnesses -----------------------------------------------------------------------------------

def test_witnesses_cosign_and_verify_counts_k_of_n(reg):
    reg.events(3)
    assert reg.cli("verify", "--witnesses", "1").exit_code == 1, "nothing witnessed yet"
    for i in (0, 1):
        r = reg.witness(i)
        assert r.exit_code == 0 and "cosigned size 3" in r.output, r.output
    with _client(reg) as c:
        cosigned = c.get("/api/v1/transparency/cosignatures").text
    witnesses = transparency.read_witnesses(reg.tmp / "witnesses.txt")
    _, good = note.open_note(cosigned, witnesses + [note.parse_vkey(reg.log_vkey())])
    assert len(good) == 3  # the registry and two witnesses
    r = reg.cli("verify", "--witnesses", "2")
    assert r.exit_code == 0 and "witnessed by at least 2 witnesses up to size 3" in r.output, r.output
    r = reg.cli("verify", "--witnesses", "3")
    assert r.exit_code == 1 and "no checkpoint carries 3 valid cosignatures" in r.output, r.output
    # the log grows: the witnesses check a consistency proof from what they cosigned
    reg.events(4)
    for i in (0, 1, 2):
        r = reg.witness(i)
        assert r.exit_code == 0 and "cosigned size 7" in r.output, r.output
    r = reg.cli("verify", "--witnesses", "3")
    assert r.exit_code == 0 and "up to size 7" in r.output, r.output
    # the offline export carries the cosignatures
    export = reg.tmp / "log.ndjson"
    (reg.tmp / "key.pem").write_text(public_key_pem(sealing.public_key(reg.rt)))
    assert reg.cli("export", str(export)).exit_code == 0
    r = reg.cli("verify", "--export", str(export), "--public-key", str(reg.tmp / "key.pem"), "--witnesses", "3")
    assert r.exit_code == 0, r.output


def test_a_rewritten_log_with_re_signed_checkpoints_fails_verify_witnesses(reg):
    reg.events(4)
    for i in (0, 1):
        assert reg.witness(i).exit_code == 0
    assert reg.cli("verify", "--witnesses", "2").exit_code == 0
    _rewrite_history(reg)
    reg.events(3)
    r = reg.cli("verify")
    assert r.exit_code == 0, "signed by the registry's own key, the rewritten log looks intact on its own"
    r = reg.cli("verify", "--witnesses", "2")
    assert r.exit_code == 1 and "NOT INTACT" in r.output and "witnesses" in r.output, r.output
    # and the next witness run reports the split view instead of cosigning
    r = reg.witness(0)
    assert r.exit_code == 2 and "SPLIT VIEW" in r.output and "does not extend size 4" in r.output, r.output


def test_re_inserted_old_cosignatures_do_not_vouch_for_a_rewritten_log(reg):
    reg.events(4)
    reg.events(2)
    for i in (0, 1):
        assert reg.witness(i).exit_code == 0
    with reg.rt.sessions() as s:
        kept = transparency.cosignature_records(s)
    _rewrite_history(reg)
    reg.events(1)  # the rewritten log is 6 events again, with another root
    with reg.rt.sessions.begin() as s:
        s.execute(insert(transparency.COSIGNATURES), [{**c, "received_at": datetime.now(UTC)}
                                                       for c in kept])
    r = reg.cli("verify", "--witnesses", "1")
    assert r.exit_code == 1 and "no checkpoint carries 1 valid cosignatures" in r.output, r.output


class _Source:
    """A registry that signs whatever it is told to (the dishonest operator of a split view)."""

    def __init__(self, signer: Signer, root: bytes, size: int, proof: list[bytes] | None = None) -> None:
        from security.audit.checkpoint import signed_note

        self.note = signed_note(signer.origin, signer.sign(size, root, datetime.now(UTC)))
        self.proof = proof or []

    def checkpoint(self) -> str:
        return self.note

    def consistency(self, first: int, second: int) -> list[bytes]:
        return self.proof

    def handovers(self) -> list[str]:
        return []


def test_a_witness_detects_a_split_view_and_never_goes_backwards(reg):
    reg.events(5)
    assert reg.witness(0).exit_code == 0
    state = witness.State.load(reg.tmp / "w0.json")
    key = note.parse_signer_key((reg.witness_keys[0]).read_text())
    signer = sealing.signer(reg.rt)
    honest_root = base64.b64decode(state.root_hash)
    other = bytes(32)
    with pytest.raises(witness.SplitView, match="different root for size 5"):
        witness.witness(state, _Source(signer, other, 5), key, 1)
    with pytest.raises(witness.SplitView, match="went backwards"):
        witness.witness(state, _Source(signer, honest_root, 4), key, 1)
    with pytest.raises(witness.SplitView, match="does not extend size 5"):
        witness.witness(state, _Source(signer, other, 9, [bytes(32)] * 3), key, 1)
    # the same checkpoint again is fine (idempotent), and a checkpoint of another key is refused
    witness.witness(state, _Source(signer, honest_root, 5), key, 1)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    with pytest.raises(witness.WitnessRefused, match="not signed by the registry key"):
        witness.witness(state, _Source(Signer(Ed25519PrivateKey.generate(), "nhr/PK"), honest_root, 5), key, 1)
    # the registry refuses a cosigned note for a checkpoint it did not sign at that size (409, no data in it)
    forged = _Source(signer, other, 5).note
    text_, sigs = note.split(forged)
    cosigned = note.format_note(text_, sigs + [note.sign(text_, key, timestamp=1)])
    with _client(reg) as c:
        r = c.post("/api/v1/transparency/cosignatures", content=cosigned, headers={"Content-Type": "text/plain"})
    assert r.status_code == 409 and "split view" in r.json()["detail"], r.text


def test_cosignatures_are_accepted_only_from_configured_witnesses(reg):
    reg.events(2)
    with _client(reg) as c:
        cp = c.get("/api/v1/transparency/checkpoint").text
        text_, sigs = note.split(cp)
        stranger = note.generate("witness.example/w0", note.COSIGNATURE_V1)  # a configured name, another key
        r = c.post("/api/v1/transparency/cosignatures",
                   content=note.format_note(text_, sigs + [note.sign(text_, stranger, timestamp=2)]))
        assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
        assert "body" in r.text
        assert c.post("/api/v1/transparency/cosignatures", content="not a note").status_code == 422
        w0 = note.parse_signer_key(reg.witness_keys[0].read_text())
        good = note.format_note(text_, sigs + [note.sign(text_, w0, timestamp=3)])
        first = c.post("/api/v1/transparency/cosignatures", content=good)
        again = c.post("/api/v1/transparency/cosignatures", content=good)
    assert first.status_code == 201 and first.json() == {"tree_size": 2, "stored": 1}
    assert again.status_code == 201 and again.json()["stored"] == 0


def test_witness_key_command_writes_a_private_key_and_prints_the_verifier_key(reg):
    out = reg.tmp / "new-witness.key"
    r = reg.cli("witness-key", "--name", "auditor-general.example/nhr", "--out", str(out))
    assert r.exit_code == 0, r.output
    v = note.parse_vkey(r.output.strip())
    assert v.sig_type == note.COSIGNATURE_V1 and note.parse_signer_key(out.read_text()).verifier.same_key(v)
    assert out.stat().st_mode & 0o777 == 0o600
    assert reg.cli("witness-key", "--name", "x", "--out", str(out)).exit_code == 2, "never overwrites a key"


# --- signing-key rotation ------------------------------------------------------------------------

def test_rotation_hands_over_the_key_and_everyone_follows(reg):
    reg.events(3)
    for i in (0, 1):
        assert reg.witness(i).exit_code == 0
    old_pem = reg.tmp / "old.pem"
    old_pem.write_text(public_key_pem(sealing.public_key(reg.rt)))
    old_key = sealing.signer(reg.rt)
    r = reg.cli("rotate-signing-key")
    assert r.exit_code == 0 and "handed over" in r.output and "at tree size 3" in r.output, r.output
    new_id = sealing.signer(reg.rt).key_id
    assert new_id != old_key.key_id
    reg.events(2)
    with reg.rt.sessions() as s:
        ids = dict(s.execute(select(CHECKPOINTS.c.tree_size, CHECKPOINTS.c.key_id)).all())
        statements = transparency.handover_statements(s)
    assert ids[3] == old_key.key_id and ids[5] == new_id
    h = handover.parse(statements[0], "nhr/PK")
    assert (h.tree_size, h.old.key_id, h.new.key_id) == (3, old_key.key_id, new_id)
    # the old public key still verifies everything (it leads to the new key through the hand-over) ...
    r = reg.cli("verify", "--public-key", str(old_pem))
    assert r.exit_code == 0 and "1 signing-key hand-overs followed" in r.output, r.output
    # ... and so does the new one (the current key is in the chain)
    assert reg.cli("verify").exit_code == 0
    # the witnesses follow the signed hand-over from the key they trusted
    for i in (0, 1):
        r = reg.witness(i)
        assert r.exit_code == 0 and "handed over" in r.output and "cosigned size 5" in r.output, r.output
    assert reg.cli("verify", "--witnesses", "2").exit_code == 0
    # a process still holding the old key cannot extend the log with it
    trail = AuditTrail(AccessContext(None, "TREAT", "req-witness-test", "127.0.0.1"))
    with reg.rt.sessions.begin() as s:
        trail.record(s, "patient.read", SUCCESS, resource_id=uuid.uuid4())
    with reg.rt.sessions() as s, pytest.raises(KeyHandedOver):
        seal(s, old_key, mac=reg.rt.event_mac, grace=sealing.grace(reg.rt))
    sealing.seal_all(reg.rt)
    assert reg.cli("verify").exit_code == 0


def test_a_checkpoint_signed_by_a_retired_key_or_a_forged_hand_over_is_rejected(reg):
    reg.events(2)
    old_key = sealing.signer(reg.rt)
    assert reg.cli("rotate-signing-key").exit_code == 0
    reg.events(1)
    with reg.rt.sessions() as s:
        snap = verify.snapshot_from_db(s, "nhr/PK")
    # a checkpoint after the hand-over, signed with the retired key, does not verify
    last = max(snap.checkpoints, key=lambda c: c.tree_size)
    snap.checkpoints[snap.checkpoints.index(last)] = old_key.sign(last.tree_size, last.root_hash, datetime.now(UTC))
    with pytest.raises(verify.Discrepancy, match="key in force|is the one in force"):
        verify.verify_snapshot(snap, old_key.public_key)
    # a hand-over not signed by the key in force breaks the chain
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    with reg.rt.sessions() as s:
        snap = verify.snapshot_from_db(s, "nhr/PK")
    a, b = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    snap.handovers = [handover.make("nhr/PK", 2, a, b, datetime.now(UTC))]
    with pytest.raises(verify.Discrepancy, match="checkpoint keys"):
        verify.verify_snapshot(snap, old_key.public_key)
    # a statement whose old-key signature is dropped is refused
    with reg.rt.sessions() as s:
        statement = transparency.handover_statements(s)[0]
    text_, sigs = note.split(statement)
    with pytest.raises(handover.HandoverError, match="not signed by the old key"):
        handover.parse(note.format_note(text_, sigs[1:]), "nhr/PK")


def test_an_interrupted_rotation_is_finished_by_running_it_again(reg, monkeypatch):
    from registry.audit_log import rotation
    from security.audit import signing_key

    reg.events(2)
    before = sealing.signer(reg.rt).key_id

    def crash(keyring):
        raise OSError("power cut")

    with monkeypatch.context() as mp:
        mp.setattr(signing_key, "install_next", crash)
        with pytest.raises(OSError):
            rotation.rotate(reg.rt)
    trail = AuditTrail(AccessContext(None, "TREAT", "req-witness-test", "127.0.0.1"))
    with reg.rt.sessions.begin() as s:
        trail.record(s, "patient.read", SUCCESS, resource_id=uuid.uuid4())
    with pytest.raises(KeyHandedOver):  # the hand-over is recorded: the old key may no longer sign
        sealing.seal_all(reg.rt)
    done = rotation.rotate(reg.rt)
    assert done.old.key_id == before and sealing.signer(reg.rt).key_id == done.new.key_id
    with reg.rt.sessions() as s:
        assert len(transparency.handover_statements(s)) == 1, "the second run finished the first, no new hand-over"
    sealing.seal_all(reg.rt)
    assert reg.cli("verify").exit_code == 0


@pytest.mark.parametrize("table", ["audit_cosignatures", "audit_key_handovers"])
@pytest.mark.parametrize("statement", ["UPDATE {t} SET tree_size = tree_size", "DELETE FROM {t}"])
def test_witness_tables_are_append_only(reg, table, statement):
    from sqlalchemy.exc import DBAPIError

    reg.events(2)
    assert reg.witness(0).exit_code == 0
    assert reg.cli("rotate-signing-key").exit_code == 0
    with reg.rt.engine.connect() as c:
        assert c.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() == 1
        with pytest.raises(DBAPIError) as exc:
            c.execute(text(statement.format(t=table)))
        assert "append-only" in str(exc.value)
        c.rollback()


def test_transparency_endpoints_are_public_unaudited_and_name_no_event(reg):
    reg.events(3)
    with reg.rt.sessions() as s:
        before = s.execute(select(text("count(*)")).select_from(EVENTS)).scalar_one()
        ids = [str(i) for i in s.execute(select(EVENTS.c.id)).scalars()]
    with _client(reg) as c:
        bodies = [c.get(p).text for p in ("/api/v1/transparency/checkpoint", "/api/v1/transparency/cosignatures",
                                          "/api/v1/transparency/key-handovers", "/api/v1/transparency/consistency?from=1&to=3")]
    with reg.rt.sessions() as s:
        assert s.execute(select(text("count(*)")).select_from(EVENTS)).scalar_one() == before, "a witness's poll grows no log"
    assert not [i for i in ids if any(i in b for b in bodies)]


def test_verify_witnesses_needs_the_witness_keys(reg):
    reg.events(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Registry, "env", lambda self: {"NHR_DATABASE_URL": self.rt.settings.database_url,
                                                  "NHR_KEY_DIR": str(self.rt.settings.key_dir), "NHR_ENV": "test"})
        mp.delenv("NHR_AUDIT_WITNESSES_FILE", raising=False)
        r = reg.cli("verify", "--witnesses", "1")
    assert r.exit_code == 2 and "NHR_AUDIT_WITNESSES_FILE" in r.output, r.output
    r = reg.cli("verify", "--witnesses", "4")
    assert r.exit_code == 1 and "only 3 witness keys are configured" in r.output, r.output
