"""Nothing leaves (issue 16 item 6): a socket guard for the whole test suite.

`install()` (called by tests/conftest.py when the suite loads) wraps `socket.socket.connect`,
`connect_ex`, `sendto` and `socket.getaddrinfo` so that any attempt to reach an address outside
loopback (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104) is refused with `OutboundRefused` (an OSError,
as an unreachable network would be) *and recorded*. The `nothing_leaves` fixture (autouse through
conftest.py) fails the test during which an attempt was recorded, even if the code under test
swallowed the error. Unix sockets and other families are local and allowed; so is resolving
`localhost` or an address literal. Any other name is refused before a DNS query can leave.

Limits: code that opens sockets outside Python (libpq inside psycopg, a browser, a subprocess)
is not seen here; tests/test_nothing_leaves.py adds a second layer for that, running the main
flows in a network namespace with no route out (`unshare -rn`) where the kernel refuses them.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from contextlib import contextmanager

import pytest

ATTEMPTS: list[str] = []  # "connect 1.1.1.1:53" ...: addresses only, never payloads
_lock = threading.Lock()
_original: dict[str, object] = {}
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


class OutboundRefused(ConnectionRefusedError):
    """An attempt to reach an address outside loopback during the tests."""


def _is_loopback_host(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return False
    host = host.split("%", 1)[0]
    if host.lower() in _LOCAL_NAMES or host.lower().endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name other than localhost: resolving it would query DNS
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _is_address(host) -> bool:
    """An address literal: resolving it asks no one (the connect is checked instead)."""
    try:
        ipaddress.ip_address((host.decode() if isinstance(host, bytes) else str(host)).split("%", 1)[0])
        return True
    except ValueError:
        return False


def _check(sock_family, address, what: str) -> None:
    if sock_family not in (socket.AF_INET, socket.AF_INET6):
        return  # AF_UNIX, netlink...: local by construction
    host = address[0] if isinstance(address, tuple) and address else address
    if _is_loopback_host(host):
        return
    port = address[1] if isinstance(address, tuple) and len(address) > 1 else "?"
    record = f"{what} {host}:{port}"
    with _lock:
        ATTEMPTS.append(record)
    raise OutboundRefused(f"outbound network refused in tests: {record}")


def install() -> None:
    """Idempotent."""
    if _original:
        return
    cls = socket.socket
    _original.update(connect=cls.connect, connect_ex=cls.connect_ex, sendto=cls.sendto, getaddrinfo=socket.getaddrinfo)

    def connect(self, address):
        _check(self.family, address, "connect")
        return _original["connect"](self, address)

    def connect_ex(self, address):
        _check(self.family, address, "connect")
        return _original["connect_ex"](self, address)

    def sendto(self, data, *args):
        _check(self.family, args[-1], "sendto")
        return _original["sendto"](self, data, *args)

    def getaddrinfo(host, *args, **kwargs):
        if host is not None and host != "" and not _is_loopback_host(host) and not _is_address(host):
            name = host if isinstance(host, str) else repr(host)
            record = f"resolve {name}"
            with _lock:
                ATTEMPTS.append(record)
            raise socket.gaierror(socket.EAI_NONAME, f"name resolution refused in tests: {record}")
        return _original["getaddrinfo"](host, *args, **kwargs)

    cls.connect, cls.connect_ex, cls.sendto = connect, connect_ex, sendto
    socket.getaddrinfo = getaddrinfo


@contextmanager
def expected():
    """For the guard's own tests: yields the attempts made inside, and forgets them afterwards
    (so the deliberate attempt does not fail the test that proves the guard works)."""
    with _lock:
        start = len(ATTEMPTS)
    seen: list[str] = []
    try:
        yield seen
    finally:
        with _lock:
            seen.extend(ATTEMPTS[start:])
            del ATTEMPTS[start:]


@pytest.fixture(autouse=True)
def nothing_leaves():
    """Fails the test if anything in it tried to reach an address outside loopback."""
    with _lock:
        start = len(ATTEMPTS)
    yield
    with _lock:
        made = ATTEMPTS[start:]
    if made:
        pytest.fail(f"the test tried to reach the network outside loopback: {made}", pytrace=False)
