"""Federation bookkeeping (registry/nodes/federation.py): a peer that failed is not asked again for
a while, so that a peer that times out does not slow every search of the node that asks it. The
transport here is a stand-in that counts calls; the real one is exercised across two nodes in
tests/test_provincial_nodes.py."""

from __future__ import annotations

import asyncio

import pytest

from registry.nodes.federation import Federation, PeerUnavailable


class CountingTransport:
    def __init__(self) -> None:
        self.calls, self.fail = 0, True

    async def post(self, base_url: str, path: str, body: dict) -> dict:
        self.calls += 1
        if self.fail:
            raise PeerUnavailable("down")
        return {"ok": True}


def test_a_failed_peer_is_not_asked_again_until_its_retry_time(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("registry.nodes.federation.time.monotonic", lambda: clock[0])
    transport = CountingTransport()
    fed = Federation("PK-SD", {"PK-PB": "https://pb.example"}, None, None, 3, transport)

    def ask():
        return asyncio.run(fed.ask("PK-PB", "/node/v1/x", {}))

    with pytest.raises(PeerUnavailable):
        ask()
    with pytest.raises(PeerUnavailable, match="not asked again"):
        ask()
    assert transport.calls == 1
    clock[0] += Federation.RETRY_AFTER_SECONDS + 1
    transport.fail = False
    assert ask() == {"ok": True} and transport.calls == 2
    assert ask() == {"ok": True} and transport.calls == 3  # a success clears the wait
