"""Caller assertions between provincial nodes (security/nodes/identity.py, docs/nodes.md): each
way an assertion can be wrong is refused. The mutual-TLS listener itself is tested across two
real nodes in tests/test_provincial_nodes.py."""

from __future__ import annotations

import copy
import time

import pytest

from registry.nodes.federation import load_peers
from security.nodes.identity import AssertionRejected, AssertionVerifier, NodeSigner, create_ca, issue_node

CALLER = {"user_id": "8d0f3c9e-3f5b-4a4c-9d55-0c1f6a1e2b3c", "role": "clinic_worker", "scope_level": "facility",
          "scope_code": "F-KRC-02", "province": "PK-SD", "purpose": "TREAT"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    base = tmp_path_factory.mktemp("pki")
    create_ca(base / "ca")
    create_ca(base / "other-ca")
    return {"base": base, "sindh": NodeSigner.load(*issue_node(base / "ca", "PK-SD", base / "sindh")),
            "rogue": NodeSigner.load(*issue_node(base / "other-ca", "PK-SD", base / "rogue")),
            "punjab": AssertionVerifier.load("PK-PB", base / "ca" / "ca.pem")}


def test_a_fresh_assertion_from_an_admitted_node_verifies(pki):
    claims = pki["punjab"].verify(pki["sindh"].assert_caller("PK-PB", CALLER))
    assert claims["node"] == "PK-SD" and claims["caller"] == CALLER


@pytest.mark.parametrize("spoil, reason", [
    (lambda a, pki: pki["rogue"].assert_caller("PK-PB", CALLER), "not issued by the federation CA"),
    (lambda a, pki: {**a, "claims": {**a["claims"], "caller": {**CALLER, "scope_code": "F-LAH-02"}}}, "signature"),
    (lambda a, pki: {**a, "claims": {**a["claims"], "node": "PK-BA"}}, "signature"),
    (lambda a, pki: pki["sindh"].assert_caller("PK-KP", CALLER), "another node"),
    (lambda a, pki: {**a, "signature": "AAAA"}, "signature"),
    (lambda a, pki: {**a, "certificate": "not a certificate"}, "not issued by the federation CA"),
    (lambda a, pki: {"claims": a["claims"]}, "malformed"),
    (lambda a, pki: "a string", "malformed"),
])
def test_a_wrong_assertion_is_refused(pki, spoil, reason):
    good = pki["sindh"].assert_caller("PK-PB", CALLER)
    with pytest.raises(AssertionRejected, match=reason):
        pki["punjab"].verify(spoil(copy.deepcopy(good), pki))


def test_an_old_assertion_is_refused(pki):
    assertion = pki["sindh"].assert_caller("PK-PB", CALLER)
    pki["punjab"].verify(assertion, now=time.time() + 30)
    with pytest.raises(AssertionRejected, match="stale"):
        pki["punjab"].verify(assertion, now=time.time() + 120)


def test_peers_are_reached_over_https_only(tmp_path):
    peers = tmp_path / "peers.json"
    peers.write_text('{"PK-PB": "https://pb.example:8443/", "PK-SD": "https://sd.example:8443"}')
    assert load_peers(peers, "PK-SD") == {"PK-PB": "https://pb.example:8443"}
    peers.write_text('{"PK-PB": "http://pb.example:8443"}')
    with pytest.raises(ValueError, match="https"):
        load_peers(peers, "PK-SD")
