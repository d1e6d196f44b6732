"""This node's place in the federation of provincial nodes (issue 16 item 4, docs/nodes.md).

A provincial node holds only its province's patients. It reaches another province's records only
by asking that province's node, over mutual TLS, with a caller assertion it signs (who asks, in
which role, from which facility, for what purpose); the other node applies its own rules and
writes its own audit event. This module is the domain side: which peers exist, what a caller
assertion says, and the last good aggregate per province. The transport (an HTTPS client with
this node's certificate) is injected by the API layer (`api/nodes/transport.py`): the domain
knows nothing of HTTP.

Invariants:
- No peer answer is trusted beyond its contract: a remote match is reduced to identity
  confirmation here, whatever the peer sent.
- A peer that does not answer never fails a request: a search says which provinces it could not
  ask; a national report marks that province `stale` with the time of its last good answer.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

from registry.settings import Settings
from security.access.principal import AccessContext, Principal
from security.nodes.identity import AssertionVerifier, NodeSigner


class PeerUnavailable(Exception):
    """A peer did not answer usefully (unreachable, TLS refused, 5xx, malformed answer)."""


class Transport(Protocol):
    async def post(self, base_url: str, path: str, body: dict) -> dict: ...


def load_peers(path: Path | None, own: str) -> dict[str, str]:
    """province -> base URL of its node-to-node listener; this node itself is left out."""
    if path is None:
        return {}
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError(f"{path}: must be a JSON object, province code -> https base URL")
    bad = [k for k, v in data.items() if not v.startswith("https://")]
    if bad:
        raise ValueError(f"{path}: peers must be reached over https (mutual TLS): {', '.join(sorted(bad))}")
    return {k: v.rstrip("/") for k, v in sorted(data.items()) if k != own}


def query_digest(system: str, normalised: str) -> str:
    """Binds an assertion to one search without putting the identifier in it."""
    return hashlib.sha256(f"{system}:{normalised}".encode()).hexdigest()


def caller_claims(access: AccessContext, principal: Principal) -> dict:
    s = principal.scope
    return {"user_id": str(principal.user_id), "username": principal.username, "role": principal.role,
            "scope_level": s.level, "scope_code": s.code, "province": s.province, "district": s.district,
            "purpose": access.purpose}


@dataclass
class Federation:
    province: str
    peers: dict[str, str]
    signer: NodeSigner | None
    verifier: AssertionVerifier | None
    timeout_seconds: float
    transport: Transport | None = None  # set by the API layer when it serves
    comparer: str | None = None  # the node that may pull linkage encodings and push pairs (NHR_NODE_COMPARER)
    _down_until: dict[str, float] = field(default_factory=dict)  # province -> monotonic time to ask again
    RETRY_AFTER_SECONDS: ClassVar[float] = 15.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Federation | None:
        node = settings.node
        if node.province is None:
            return None
        tls = (node.tls_cert, node.tls_key, node.tls_ca)
        if any(tls) and not all(tls):
            raise ValueError("NHR_NODE_TLS_CERT, NHR_NODE_TLS_KEY and NHR_NODE_TLS_CA go together")
        signer = verifier = None
        if all(tls):
            signer = NodeSigner.load(node.tls_cert, node.tls_key)
            if signer.province != node.province:
                raise ValueError(f"the node certificate is for {signer.province}, not NHR_NODE_PROVINCE={node.province}")
            verifier = AssertionVerifier.load(node.province, node.tls_ca)
        peers = load_peers(node.peers_file, node.province)
        if peers and signer is None:
            raise ValueError("peers need the node's TLS identity: set NHR_NODE_TLS_CERT, _KEY and _CA")
        return cls(node.province, peers, signer, verifier, node.timeout_seconds, comparer=node.comparer)

    @property
    def federated(self) -> bool:
        return bool(self.peers) and self.signer is not None and self.transport is not None

    def assertion(self, audience: str, caller: dict, **bound: str) -> dict:
        assert self.signer is not None
        return self.signer.assert_caller(audience, {**caller, **bound})

    async def ask(self, province: str, path: str, body: dict) -> dict:
        """A peer that failed is not asked again for `RETRY_AFTER_SECONDS` (counted unreachable at once), so that
        a peer that times out does not add its timeout to every search of this node meanwhile."""
        if self.transport is None:
            raise PeerUnavailable("this process has no transport to peers")
        if time.monotonic() < self._down_until.get(province, float("-inf")):
            raise PeerUnavailable("failed recently; not asked again yet")
        try:
            answer = await self.transport.post(self.peers[province], path, body)
        except PeerUnavailable:
            self._down_until[province] = time.monotonic() + self.RETRY_AFTER_SECONDS
            raise
        self._down_until.pop(province, None)
        return answer
