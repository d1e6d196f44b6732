"""Proofs served by the API, checked offline by the CLI with only the public key (issue 3:
"inclusion and consistency proofs are served by the API and checked by the CLI")."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from cli.main import app as cli_app
from registry.audit_log import sealing
from security.audit import verify
from security.audit.sealer import EVENTS

runner = CliRunner()


def _get(world, path, **params):
    r = world.client.get(path, params=params, headers=world.h("auditor"))
    assert r.status_code == 200, r.json()
    return r.json()


@pytest.fixture
def served(runtime, world, tmp_path):
    """A sealed log with two checkpoints, an inclusion proof, a consistency proof, the public key
    and the event's export record, all saved as files like an auditor would."""
    p = world.register()
    sealing.seal_all(runtime)
    first = _get(world, "/api/v1/audit/checkpoints/latest")
    world.register()
    sealing.seal_all(runtime)
    second = _get(world, "/api/v1/audit/checkpoints/latest")
    with runtime.sessions() as s:
        event_id = s.execute(select(EVENTS.c.id).where(EVENTS.c.resource_id == p["id"],
                                                       EVENTS.c.action == "patient.create")).scalar_one()
    with runtime.sessions() as s:  # a fresh session: the export reads under its own snapshot isolation
        pk = sealing.public_key(runtime)
        record = next(json.loads(line) for line in verify.export_lines(s, sealing.origin(runtime), pk)
                      if f'"id": "{event_id}"' in line and '"kind": "event"' in line)
    files = {
        "proof": _get(world, f"/api/v1/audit/events/{event_id}/proof", tree_size=second["tree_size"]),
        "consistency": _get(world, "/api/v1/audit/consistency", first=first["tree_size"], second=second["tree_size"]),
        "event": record,
    }
    paths = {}
    for name, doc in files.items():
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(doc))
    paths["key"] = tmp_path / "key.pem"
    paths["key"].write_text(_get(world, "/api/v1/audit/public-key")["public_key_pem"])
    return paths


def _check(*args):
    return runner.invoke(cli_app, ["audit", *map(str, args)])


def test_valid_proofs_check_offline(served):
    r = _check("check-proof", served["proof"], "--public-key", served["key"], "--event", served["event"])
    assert r.exit_code == 0 and r.output.startswith("valid:") and "content matches" in r.output, r.output
    r = _check("check-consistency", served["consistency"], "--public-key", served["key"])
    assert r.exit_code == 0 and "only appended to" in r.output, r.output


def _tampered(path, change):
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def _flip(hex_string: str) -> str:
    return ("0" if hex_string[0] != "0" else "1") + hex_string[1:]


@pytest.mark.parametrize("name,change", [
    ("leaf hash", lambda d: d.update(leaf_hash=_flip(d["leaf_hash"]))),
    ("audit path", lambda d: d["audit_path"].__setitem__(0, _flip(d["audit_path"][0]))),
    ("leaf index", lambda d: d.update(leaf_index=d["leaf_index"] + 1 if d["leaf_index"] + 1 < d["tree_size"] else 0)),
    ("tree size", lambda d: d.update(tree_size=d["tree_size"] - 1)),
    ("root", lambda d: d["checkpoint"].update(root_hash=d["checkpoint"]["root_hash"][::-1])),
    ("signature", lambda d: d["checkpoint"].update(signature=d["checkpoint"]["signature"][:8] + "A" * 8 + d["checkpoint"]["signature"][16:])),
])
def test_tampered_inclusion_proof_is_rejected(served, name, change):
    _tampered(served["proof"], change)
    r = _check("check-proof", served["proof"], "--public-key", served["key"])
    assert r.exit_code == 1 and "REJECTED" in r.output, f"{name}: {r.output}"


def test_an_edited_event_no_longer_matches_its_proof(served):
    _tampered(served["event"], lambda d: d["event"].update(outcome="denied"))
    r = _check("check-proof", served["proof"], "--public-key", served["key"], "--event", served["event"])
    assert r.exit_code == 1 and "content does not hash" in r.output, r.output


def test_another_key_rejects(served, tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from security.audit.checkpoint import public_key_pem

    other = tmp_path / "other.pem"
    other.write_text(public_key_pem(Ed25519PrivateKey.generate().public_key()))
    assert _check("check-proof", served["proof"], "--public-key", other).exit_code == 1
    assert _check("check-consistency", served["consistency"], "--public-key", other).exit_code == 1


def test_tampered_consistency_proof_is_rejected(served):
    _tampered(served["consistency"], lambda d: d["proof"].__setitem__(0, _flip(d["proof"][0])))
    r = _check("check-consistency", served["consistency"], "--public-key", served["key"])
    assert r.exit_code == 1 and "REJECTED" in r.output, r.output
