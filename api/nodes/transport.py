"""The HTTPS client one provincial node uses to ask another (issue 16 item 4): mutual TLS with
this node's certificate, the peer verified against the federation CA (and its host name), a short
timeout. Every failure becomes PeerUnavailable, which the domain turns into "could not ask" or
`stale`, never into a failed request."""

from __future__ import annotations

import ssl

import httpx

from registry.nodes.federation import Federation, PeerUnavailable
from registry.settings import Settings


class MutualTlsTransport:
    def __init__(self, settings: Settings) -> None:
        node = settings.node
        self.context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(node.tls_ca))
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.load_cert_chain(str(node.tls_cert), str(node.tls_key))
        self.timeout = node.timeout_seconds

    async def post(self, base_url: str, path: str, body: dict) -> dict:
        try:
            async with httpx.AsyncClient(verify=self.context, timeout=self.timeout, trust_env=False) as client:
                response = await client.post(base_url + path, json=body)
        except (httpx.HTTPError, ssl.SSLError, OSError) as exc:
            raise PeerUnavailable(type(exc).__name__) from None
        if response.status_code != 200:
            raise PeerUnavailable(f"status {response.status_code}")
        try:
            answer = response.json()
        except ValueError:
            raise PeerUnavailable("not JSON") from None
        if not isinstance(answer, dict):
            raise PeerUnavailable("not a JSON object")
        return answer


def install(federation: Federation | None, settings: Settings) -> None:
    """Give a node with peers its transport (idempotent)."""
    if federation is not None and federation.peers and federation.transport is None:
        federation.transport = MutualTlsTransport(settings)
