"""`nhr serve --workers 2`: a worker killed with SIGKILL is replaced at once (issue 18).

A real server on a free port, a real kill -9. Bounded loops with generous deadlines, no timing
assertion beyond them: the supervisor must notice the death and start a replacement within a few
seconds (it once took the 60 s health-check timeout), the other worker keeps answering meanwhile,
and the server is back to two serving workers once the replacement has started up (its start-up
time is imports, which on a loaded 2-core machine can take a while: hence the generous deadline).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

DETECT_DEADLINE = 10  # seconds for the supervisor to notice the kill and spawn a replacement
START_DEADLINE = 180  # seconds for a worker to import the app and start serving on a loaded machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _workers(parent: int) -> set[int]:
    try:
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    except OSError:
        return set()
    out = set()
    for pid in map(int, children):
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                out.add(pid)
        except OSError:
            pass
    return out


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _until(predicate, deadline: float, step: float = 0.2) -> bool:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads worker pids from /proc")
def test_a_killed_worker_is_replaced_promptly(runtime, tmp_path):
    port = _free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "NHR_DATABASE_URL": runtime.settings.database_url, "NHR_KEY_DIR": str(runtime.settings.key_dir),
           "NHR_ENV": "test", "NHR_AUDIT_SEAL_INTERVAL_SECONDS": "0", "NHR_REPORT_REFRESH_INTERVAL_SECONDS": "0"}
    nhr = Path(sys.executable).parent / "nhr"
    with open(log, "wb") as out:
        server = subprocess.Popen([str(nhr), "serve", "--port", str(port), "--workers", "2"], env=env, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    started = lambda: log.read_text(errors="replace").count("Application startup complete")  # noqa: E731
    try:
        assert _until(lambda: started() >= 2 and len(_workers(server.pid)) == 2, START_DEADLINE), log.read_text()
        assert _healthy(port)
        before = _workers(server.pid)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        # Noticed and replaced within a few seconds, not after the 60 s health-check timeout.
        assert _until(lambda: f"Child process [{victim}] died" in log.read_text(errors="replace"), DETECT_DEADLINE), \
            log.read_text()
        assert _until(lambda: len(_workers(server.pid) - before) == 1, DETECT_DEADLINE)
        assert _until(lambda: _healthy(port), DETECT_DEADLINE), "the surviving worker stopped answering"
        # Back to two serving workers once the replacement has started up.
        assert _until(lambda: started() >= 3, START_DEADLINE), log.read_text()
        assert len(_workers(server.pid)) == 2 and victim not in _workers(server.pid)
        assert _healthy(port)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)  # the group this test started, by its id
            server.wait(10)


def test_a_ping_to_a_killed_worker_does_not_wait_for_the_timeout(tmp_path):
    """The race uvicorn's supervisor lost: a worker killed while (or just before) it is pinged.
    The parent no longer holds the child's end of the pipe, so the ping sees end-of-file at once
    instead of waiting out the health-check timeout (600 s here: the deadline below is 60 s)."""
    import threading

    import uvicorn

    from cli.supervisor import _Worker

    config = uvicorn.Config("tests.test_worker_replacement:_tiny_app", host="127.0.0.1", port=_free_port(), log_level="error")
    sock = config.bind_socket()
    worker = _Worker(config, [sock])
    worker.start()
    try:
        assert worker.child_conn.closed
        assert _until(lambda: worker.ping(timeout=5), START_DEADLINE)
        os.kill(worker.pid, signal.SIGKILL)
        answer: list = []
        t = threading.Thread(target=lambda: answer.append(worker._healthcheck(600)), daemon=True)
        t.start()
        t.join(60)
        assert answer == [None], "the ping to a dead worker waited for the timeout"
    finally:
        worker.kill()
        worker.join()
        sock.close()


async def _tiny_app(scope, receive, send):  # pragma: no cover - runs in the spawned worker
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
