"""Servers under test, each a uvicorn process with N workers on a free loopback port.

The registry runs as an operator would run it (`nhr serve --workers N`: NHR's own access log at
INFO, no uvicorn access log); the baselines run under the same uvicorn settings. Server output
is drained in the background and only its tail is kept, for error messages.
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, name: str, cmd: list[str], env: dict[str, str], port: int, health: str, cwd: Path = REPO,
                 background: list[str] | None = None) -> None:
        """`background`: a command run beside the server for as long as it runs (the registry's
        `nhr worker`); its CPU counts in `cpu_seconds`, its memory in `background_peak_rss_mb`."""
        self.name, self.port, self.health = name, port, health
        self.base = f"http://127.0.0.1:{port}"
        self._tail: collections.deque[bytes] = collections.deque(maxlen=64)
        self.proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        threading.Thread(target=self._drain, daemon=True).start()
        self.background = None
        if background:
            self.background = subprocess.Popen(background, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL, start_new_session=True)

    def _drain(self) -> None:
        while chunk := self.proc.stdout.read1(65536):
            self._tail.append(chunk)

    def tail(self) -> str:
        return b"".join(self._tail).decode(errors="replace")[-2000:]

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.base + self.health, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not become ready in {timeout:.0f}s:\n{self.tail()}")

    def worker_pids(self) -> list[int]:
        """The uvicorn worker processes (children of the supervisor), or the server itself with one worker."""
        kids = []
        for task in Path(f"/proc/{self.proc.pid}/task").glob("*"):
            try:
                kids += [int(p) for p in (task / "children").read_text().split()]
            except OSError:
                pass
        workers = [p for p in kids if b"resource_tracker" not in _cmdline(p)]
        return workers or [self.proc.pid]

    def cpu_seconds(self) -> float:
        """User + system CPU time of the workers so far (/proc/<pid>/stat). Per request it is the
        cost that other processes on a shared machine do not distort, unlike the rate."""
        total = 0
        for pid in self.worker_pids() + ([self.background.pid] if self.background else []):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
            except (OSError, IndexError, ValueError):
                pass
        return total / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> list[float]:
        """VmHWM (peak resident set) of each worker, in MiB."""
        return self._status("VmHWM:")

    def background_peak_rss_mb(self) -> float | None:
        """VmHWM of the background process (`nhr worker`), in MiB; None without one."""
        if self.background is None:
            return None
        found = _status_of(self.background.pid, "VmHWM:")
        return found[0] if found else None

    def rss_mb(self) -> list[float]:
        """VmRSS (current resident set) of each worker, in MiB."""
        return self._status("VmRSS:")

    def _status(self, field: str) -> list[float]:
        return [v for pid in self.worker_pids() for v in _status_of(pid, field)]

    def stop(self) -> None:
        if self.background is not None and self.background.poll() is None:
            os.killpg(self.background.pid, signal.SIGTERM)
            try:
                self.background.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.background.pid, signal.SIGKILL)
                self.background.wait(5)
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # our own session: the supervisor and its workers only
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def _status_of(pid: int, field: str) -> list[float]:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field):
                return [int(line.split()[1]) / 1024]
    except OSError:
        pass
    return []


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _uvicorn(app: str, port: int, workers: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
            "--no-access-log", "--no-proxy-headers", "--log-level", "warning", "--timeout-worker-healthcheck", "60"]


def in_process_worker() -> bool:
    """Whether the registry's API workers seal the audit log and refresh the aggregates themselves
    (`NHR_BENCH_IN_PROCESS_WORKER=1`, how the benchmark ran until 2026-12-03) instead of `nhr worker`
    beside them, as production runs (NHR_IN_PROCESS_WORKER is off there by default)."""
    return os.environ.get("NHR_BENCH_IN_PROCESS_WORKER", "0") == "1"


def start_registry(url: str, key_dir: str, workers: int, *, tree: Path | None = None, name: str = "registry") -> Server:
    """`tree`: serve another checkout's code (bench/write_paths.py: main against this branch).

    As production runs it: the API's workers serve requests, and `nhr worker`, a process of its
    own, seals the audit log and refreshes the coverage aggregates (its CPU counts in the
    server's `cpu_seconds`); see `in_process_worker` for the old arrangement."""
    port = free_port()
    env = {**os.environ, "NHR_ENV": "test", "NHR_DATABASE_URL": url, "NHR_KEY_DIR": key_dir,
           "NHR_TOKEN_TTL_SECONDS": "3600", "PYTHONUNBUFFERED": "1",
           # the workloads measure throughput with a handful of principals: the per-principal limit
           # (600 requests a minute by default) would measure the limiter instead
           "NHR_RATE_LIMIT_REQUESTS": "0",
           # `nhr worker` must not start a province's deduplication (or a node comparison) mid-run
           "NHR_DEDUPE_INTERVAL_HOURS": "0"}
    for k in ("NHR_ARGON2_MEMORY_KIB", "NHR_ARGON2_TIME_COST"):
        env.pop(k, None)  # default (OWASP) argon2 parameters
    cmd = [sys.executable, "-m", "cli.main", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    background = None
    if not in_process_worker():
        env["NHR_IN_PROCESS_WORKER"] = "false"
        background = [sys.executable, "-m", "cli.main", "worker"]
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
        return Server(name, cmd, env, port, "/readyz", cwd=tree, background=background)
    return Server(name, cmd, env, port, "/readyz", background=background)


class Background:
    """`nhr worker` on its own, for benchmarks that run several registries on one database
    (bench/gate.py): one sealer and refresher for all of them, its CPU counted for none."""

    def __init__(self, env: dict[str, str], cwd: Path = REPO) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "cli.main", "worker"], env=env, cwd=cwd,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def start_trivial(workers: int) -> Server:
    port = free_port()
    return Server("trivial", _uvicorn("bench.baselines:trivial_app", port, workers), dict(os.environ), port, "/healthz")


def start_bare(url: str, workers: int) -> Server:
    port = free_port()
    env = {**os.environ, "NHR_BENCH_BARE_URL": url}
    return Server("bare", _uvicorn("bench.baselines:bare_app", port, workers), env, port, "/healthz")
