"""The client address an audit event records, behind a reverse proxy or not.

The peer of the TCP connection is the client, unless that peer is one of the reverse proxies
the operator declared trusted (`NHR_TRUSTED_PROXIES`, comma-separated addresses or CIDR ranges).
Then the client is taken from `X-Forwarded-For`, read from the right: each hop that is itself a
trusted proxy is skipped, and the first address that is not is the client. A header sent by
anyone else is ignored, so a client cannot choose the address that its own accesses are
audited under. Nothing is trusted by default.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from starlette.requests import Request

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=8)
def trusted_networks(setting: str) -> tuple[Network, ...]:
    """Parse the setting (raises ValueError naming the entry that is not an address or range)."""
    nets = []
    for item in (x.strip() for x in setting.split(",")):
        if item:
            try:
                nets.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"NHR_TRUSTED_PROXIES: {item!r} is not an IP address or CIDR range") from None
    return tuple(nets)


def _ip(text: str):
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


def _trusted(addr, nets: tuple[Network, ...]) -> bool:
    return addr is not None and any(addr in n for n in nets)


def resolve(peer: str | None, forwarded_for: list[str], nets: tuple[Network, ...]) -> str | None:
    """The client address, given the connection's peer and the X-Forwarded-For header values."""
    if not nets or not _trusted(_ip(peer or ""), nets):
        return peer
    hops = [h.strip() for value in forwarded_for for h in value.split(",") if h.strip()]
    for hop in reversed(hops):
        addr = _ip(hop)
        if addr is None:
            break  # a malformed hop: stop believing the header here
        if not _trusted(addr, nets):
            return str(addr)
    return peer


def client_address(request: Request) -> str | None:
    peer = request.client.host if request.client else None
    setting = request.app.state.runtime.settings.serve.trusted_proxies if hasattr(request.app.state, "runtime") else ""
    if not setting:
        return peer
    return resolve(peer, request.headers.getlist("x-forwarded-for"), trusted_networks(setting))
