"""A real `uvicorn api.main:app` process on the suite's database and keyring, on a free loopback
port: for tests that need separate processes (each with its own caches) over one database."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.request import urlopen

from registry.runtime import Runtime

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(rt: Runtime, **extra: str) -> dict:
    s = rt.settings
    return {**os.environ, "NHR_ENV": "test", "NHR_DATABASE_URL": s.database_url, "NHR_KEY_DIR": str(s.key_dir),
            "NHR_AUDIT_SEAL_INTERVAL_SECONDS": "0", "NHR_REPORT_REFRESH_INTERVAL_SECONDS": "0",
            "NHR_LOGIN_MAX_FAILURES_PER_CLIENT": "1000", "NHR_ARGON2_MEMORY_KIB": "1024", "NHR_ARGON2_TIME_COST": "1",
            "NHR_RATE_LIMIT_REQUESTS": "100000", **extra}


@contextmanager
def serving(rt: Runtime, log_path: Path, *, prefix: tuple[str, ...] = (), **env: str):
    """Yields the base URL while the server runs; `prefix` wraps the command (e.g. `unshare -rn`)."""
    port = free_port()
    with log_path.open("wb") as log:
        proc = subprocess.Popen([*prefix, sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1",
                                 "--port", str(port), "--no-access-log"], cwd=ROOT, env=server_env(rt, **env),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            for _ in range(600):
                if proc.poll() is not None:
                    raise RuntimeError(f"the server exited ({proc.returncode}); see {log_path}")
                try:
                    with urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                        if r.status == 200:
                            break
                except OSError:
                    time.sleep(0.2)
            else:
                raise RuntimeError("the server did not come up")
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
