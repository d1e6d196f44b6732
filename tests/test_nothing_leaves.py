"""Nothing leaves (issue 16 item 6): the registry makes no outbound network connection.

Two layers: the socket guard every test runs under (tests/network_guard.py), proven here to
refuse and to fail a test even when the code swallows the error; and the main flows (demo load,
register, dose, certificate, report, FHIR) run under that guard in this process and, where user
namespaces are allowed, again as separate processes inside a network namespace without a route out
(`unshare -rn`), where the kernel itself refuses what Python cannot see (libpq, subprocesses).
The namespace runs use SQLite: the PostgreSQL server on the host's loopback is outside it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import network_guard
from conftest import drop_database, fresh_database_url
from offline_flows import main as flows_main  # noqa: F401 (the script the namespace runs)
from offline_flows import run, settings_for
from registry import bootstrap
from registry.runtime import Runtime

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
FLOWS = ["demo load", "register", "dose", "certificate", "report", "FHIR", "logout"]


def _why(r: subprocess.CompletedProcess) -> str:
    """Our own output and the exception's type only: a database error would show bound values."""
    raised = [line.split(":", 1)[0] for line in r.stderr.splitlines() if line[:1].isalpha()]
    return f"exit {r.returncode}; {r.stdout[-1000:]}; {raised[-1:] if raised else ''}"


def _namespaces() -> bool:
    unshare = shutil.which("unshare")
    return bool(unshare) and subprocess.run([unshare, "-rn", "true"], capture_output=True).returncode == 0


def test_the_guard_refuses_and_records_every_way_out():
    with network_guard.expected() as seen:
        with pytest.raises(OSError):
            socket.create_connection(("1.1.1.1", 53), timeout=1)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s, pytest.raises(OSError):
            s.connect_ex(("8.8.8.8", 443))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, pytest.raises(OSError):
            s.sendto(b"\0", ("1.1.1.1", 53))
        if socket.has_ipv6:
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s, pytest.raises(OSError):
                s.connect(("2606:4700:4700::1111", 53, 0, 0))
        with pytest.raises(OSError):
            socket.getaddrinfo("example.org", 443)  # a DNS query would leave before any connect
    assert seen[:3] == ["connect 1.1.1.1:53", "connect 8.8.8.8:443", "sendto 1.1.1.1:53"]
    assert seen[-1] == "resolve example.org"


def test_loopback_and_unix_sockets_are_allowed(tmp_path):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        socket.create_connection(server.getsockname(), timeout=5).close()
        socket.create_connection(("localhost", server.getsockname()[1]), timeout=5).close()
    path = str(tmp_path / "s.sock")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen()
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)


def test_a_test_that_swallows_an_outbound_attempt_still_fails(tmp_path):
    """The deliberate attempt: a test reaching 1.1.1.1 (and ignoring the error) fails the run."""
    (tmp_path / "conftest.py").write_text(textwrap.dedent("""
        import network_guard
        network_guard.install()
        nothing_leaves = network_guard.nothing_leaves
    """))
    (tmp_path / "test_careless.py").write_text(textwrap.dedent("""
        import socket

        def test_reaches_out_and_ignores_the_error():
            try:
                socket.create_connection(("1.1.1.1", 53), timeout=1)
            except OSError:
                pass

        def test_stays_on_loopback():
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                s.listen()
                socket.create_connection(s.getsockname(), timeout=5).close()
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT)])}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", str(tmp_path)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "tried to reach the network outside loopback: ['connect 1.1.1.1:53']" in r.stdout
    assert "ERROR test_careless.py::test_reaches_out_and_ignores_the_error" in r.stdout
    assert "PASSED test_careless.py::test_stays_on_loopback" in r.stdout


def test_the_main_flows_reach_nothing_outside_loopback(tmp_path):
    """In this process, under the guard (the autouse fixture fails the test on any attempt)."""
    url = fresh_database_url(tmp_path, "leaves")
    rt = Runtime.build(settings_for(url, tmp_path / "keys"))
    try:
        bootstrap.init(rt)
        before = len(network_guard.ATTEMPTS)
        assert run(rt) == FLOWS
        assert network_guard.ATTEMPTS[before:] == []
    finally:
        rt.engine.dispose()
        drop_database(url)


@pytest.mark.skipif(not _namespaces(), reason="user and network namespaces are not allowed here (unshare -rn)")
def test_the_main_flows_run_in_a_network_namespace_without_a_route_out(tmp_path):
    url, keys = f"sqlite:///{tmp_path / 'nhr.sqlite3'}", tmp_path / "keys"
    env = {**os.environ, "NHR_ENV": "test", "NHR_DATABASE_URL": url, "NHR_KEY_DIR": str(keys),
           "NHR_ARGON2_MEMORY_KIB": "1024", "NHR_ARGON2_TIME_COST": "1", "NHR_AUDIT_SEAL_INTERVAL_SECONDS": "0",
           "NHR_REPORT_REFRESH_INTERVAL_SECONDS": "0"}
    env.pop("NHR_TEST_DATABASE_URL", None)
    unshare = [shutil.which("unshare"), "-rn"]
    demo = subprocess.run([*unshare, str(Path(sys.executable).with_name("nhr")), "demo", "--patients", "150", "--no-serve"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, _why(demo)
    flows = subprocess.run([*unshare, sys.executable, str(TESTS / "offline_flows.py"), url, str(keys), "--probe-kernel"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert flows.returncode == 0, _why(flows)
    assert f"flows: {', '.join(FLOWS)}" in flows.stdout
    assert "raw connect to 1.1.1.1:53: ENETUNREACH" in flows.stdout  # the namespace has no route out
    careless = subprocess.run([*unshare, sys.executable, str(TESTS / "offline_flows.py"), url, str(keys), "--reach-out"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert careless.returncode == 1 and "outbound attempts: ['connect 1.1.1.1:53']" in careless.stdout
