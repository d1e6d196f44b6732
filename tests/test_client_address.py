"""The audited client address behind a reverse proxy: X-Forwarded-For is believed only from a
declared proxy, read from the right, so a client cannot choose the address it is audited under."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from api.client_address import resolve, trusted_networks
from registry.settings import Settings
from security.audit.models import AuditEventRow as AuditEvent
from tests.conftest import PASSWORD

NETS = trusted_networks("10.1.0.0/16, 192.0.2.7")


def test_untrusted_peer_is_the_client_whatever_it_claims():
    assert resolve("203.0.113.9", ["198.51.100.1"], NETS) == "203.0.113.9"


def test_trusted_proxy_gives_the_rightmost_untrusted_hop():
    # a client claiming to be 1.2.3.4 in its own header, seen by the proxy as 198.51.100.20
    assert resolve("10.1.2.3", ["1.2.3.4, 198.51.100.20"], NETS) == "198.51.100.20"
    assert resolve("10.1.2.3", ["1.2.3.4", "198.51.100.20, 192.0.2.7"], NETS) == "198.51.100.20"


def test_malformed_or_missing_header_falls_back_to_the_peer():
    assert resolve("10.1.2.3", [], NETS) == "10.1.2.3"
    assert resolve("10.1.2.3", ["not-an-address"], NETS) == "10.1.2.3"
    assert resolve("10.1.2.3", ["10.1.9.9"], NETS) == "10.1.2.3"


def test_nothing_is_trusted_by_default():
    assert resolve("10.1.2.3", ["198.51.100.20"], trusted_networks("")) == "10.1.2.3"


def test_a_bad_setting_is_refused():
    with pytest.raises(ValueError):
        Settings(serve={"trusted_proxies": "10.0.0.0/8, proxy.example"})


def test_audit_event_records_the_forwarded_client(runtime, world, monkeypatch):
    """End to end: a login through a trusted proxy is audited under the client's address, and the
    same header from an untrusted peer is ignored."""
    monkeypatch.setattr(runtime.settings.serve, "trusted_proxies", "10.9.0.0/16")
    app = create_app(runtime.settings, runtime)
    for peer, expected in (("10.9.0.5", "198.51.100.77"), ("203.0.113.5", "203.0.113.5")):
        with TestClient(app, raise_server_exceptions=False, client=(peer, 40000)) as c:
            r = c.post("/api/v1/auth/token", data={"username": world.users["clinic_a"], "password": PASSWORD},
                       headers={"X-Forwarded-For": "198.51.100.77"})
            assert r.status_code == 200
        with runtime.sessions() as s:
            addr = s.execute(select(AuditEvent.client_address).where(AuditEvent.actor_username == world.users["clinic_a"])
                             .order_by(AuditEvent.occurred_at.desc()).limit(1)).scalar_one()
        assert addr == expected
