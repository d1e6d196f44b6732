"""Load generators: `wrk` when it is installed, else a small built-in asyncio one.

A request is described once (`RequestSpec`) and rendered either as a wrk Lua script (written to
a private temporary file and deleted afterwards) or as raw HTTP/1.1 for the built-in
generator. Placeholders: `{x}` is a random pick from `choices` (patient ids, B-form numbers),
`{u}` a 13-digit number unique within the run and starting with 9, `{g}` the same number
starting with 8 (the loaded population uses first digits 1-7, so neither ever collides).
Both generators keep connections alive and report requests/s, p50/p99 latency, and errors
(connect/read/timeout) separately from responses outside 2xx/3xx.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

WRK_MISSING = "wrk not found: install it with `apt-get install wrk` (Debian/Ubuntu); using the built-in Python generator"


@dataclass
class RequestSpec:
    method: str
    path: str
    body: str | None = None
    choices: list[str] = field(default_factory=list, repr=False)
    headers: dict[str, str] = field(default_factory=dict, repr=False)


def choose() -> tuple[str, str | None]:
    """('wrk', path) if wrk is on PATH, else ('python', None)."""
    path = shutil.which("wrk")
    return ("wrk", path) if path else ("python", None)


def run(generator: str, base: str, spec: RequestSpec, *, duration: float, concurrency: int, nonce: int) -> dict:
    if generator == "wrk":
        return _run_wrk(base, spec, duration=duration, concurrency=concurrency, nonce=nonce)
    return asyncio.run(_run_python(base, spec, duration=duration, concurrency=concurrency, nonce=nonce))


# --- wrk -------------------------------------------------------------------------------------

def _lua_str(s: str) -> str:
    return "[==[" + s + "]==]"


def _lua_expr(template: str) -> str:
    parts = []
    for piece in re.split(r"(\{[xug]\})", template):
        if piece in ("{x}", "{u}", "{g}"):
            parts.append(piece[1])
        elif piece:
            parts.append(_lua_str(piece))
    return " .. ".join(parts) or '""'


def lua_script(spec: RequestSpec, nonce: int) -> str:
    dynamic = any(t in (spec.path + (spec.body or "")) for t in ("{x}", "{u}", "{g}"))
    lines = [f"wrk.method = {_lua_str(spec.method)}"]
    lines += [f"wrk.headers[ {_lua_str(k)} ] = {_lua_str(v)}" for k, v in spec.headers.items()]
    lines.append("local choices = {" + ",".join(_lua_str(c) for c in spec.choices) + "}")
    lines.append(f'local nonce = "{nonce % 10000:04d}"')
    lines.append("local counter, n, static = 0, 0, nil")
    lines.append('function setup(thread) n = n + 1; thread:set("tid", n) end')
    lines.append("function init(args) math.randomseed(os.time() * 131 + (tid or 0)) end")
    body = _lua_expr(spec.body) if spec.body is not None else "nil"
    if dynamic:
        lines.append("function request()\n  counter = counter + 1\n"
                     "  local x = #choices > 0 and choices[math.random(#choices)] or \"\"\n"
                     "  local rest = string.format(\"%s%02d%06d\", nonce, (tid or 0) % 100, counter % 1000000)\n"
                     "  local u, g = \"9\" .. rest, \"8\" .. rest\n"
                     f"  return wrk.format(nil, {_lua_expr(spec.path)}, nil, {body})\nend")
    else:
        lines.append(f"function request()\n  if not static then static = wrk.format(nil, {_lua_str(spec.path)}, nil, {body}) end\n"
                     "  return static\nend")
    lines.append(
        "function done(summary, latency, requests)\n"
        "  local e = summary.errors\n"
        "  io.write(string.format('BENCHJSON {\"requests\":%d,\"duration_us\":%d,\"p50_us\":%d,\"p99_us\":%d,"
        "\"connect\":%d,\"read\":%d,\"write\":%d,\"status\":%d,\"timeout\":%d}\\n', summary.requests, summary.duration,"
        " latency:percentile(50), latency:percentile(99), e.connect, e.read, e.write, e.status, e.timeout))\nend")
    return "\n".join(lines) + "\n"


def _run_wrk(base: str, spec: RequestSpec, *, duration: float, concurrency: int, nonce: int) -> dict:
    fd, script = tempfile.mkstemp(prefix="nhr-bench-", suffix=".lua")  # mode 0600: it holds ids and a token
    try:
        with os.fdopen(fd, "w") as f:
            f.write(lua_script(spec, nonce))
        threads = max(1, min(2, concurrency))
        cmd = ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "--timeout", "10s",
               "-s", script, base]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    finally:
        os.unlink(script)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCHJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed (exit {out.returncode}): {out.stderr.strip()[-300:]}")
    r = json.loads(line[len("BENCHJSON "):])
    seconds = r["duration_us"] / 1e6
    return {"rate": r["requests"] / seconds if seconds else 0.0, "requests": r["requests"], "seconds": seconds,
            "p50_ms": r["p50_us"] / 1000, "p99_ms": r["p99_us"] / 1000, "non2xx": r["status"],
            "errors": r["connect"] + r["read"] + r["write"] + r["timeout"]}


# --- built-in generator -----------------------------------------------------------------------

def _render(spec: RequestSpec, host: str, rng: random.Random, n: int, nonce: int) -> bytes:
    x = rng.choice(spec.choices) if spec.choices else ""
    rest = f"{nonce % 10000:04d}{n % 10**8:08d}"
    u, g = "9" + rest, "8" + rest

    def sub(t: str) -> str:
        return t.replace("{x}", x).replace("{u}", u).replace("{g}", g)

    body = sub(spec.body).encode() if spec.body is not None else b""
    head = [f"{spec.method} {sub(spec.path)} HTTP/1.1", f"Host: {host}"]
    head += [f"{k}: {v}" for k, v in spec.headers.items()]
    if spec.body is not None:
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("closed")
    status = int(status_line.split()[1])
    length, chunked = 0, False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def _run_python(base: str, spec: RequestSpec, *, duration: float, concurrency: int, nonce: int) -> dict:
    hostport = base.split("://", 1)[1].split("/", 1)[0]
    host, _, port = hostport.partition(":")
    counter = itertools.count(1)
    latencies: list[float] = []
    bad = [0, 0]  # non-2xx/3xx, errors

    async def client(i: int, stop_at: float) -> None:
        rng = random.Random(i * 7919 + nonce)
        reader = writer = None
        while time.perf_counter() < stop_at:
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, int(port or 80))
                t0 = time.perf_counter()
                writer.write(_render(spec, hostport, rng, next(counter), nonce))
                status = await asyncio.wait_for(_read_response(reader), 10)
                latencies.append(time.perf_counter() - t0)
                if status >= 400:
                    bad[0] += 1
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError, ValueError):
                bad[1] += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(client(i, start + duration) for i in range(concurrency)))
    seconds = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else 0.0

    return {"rate": len(latencies) / seconds, "requests": len(latencies), "seconds": seconds,
            "p50_ms": pct(0.5), "p99_ms": pct(0.99), "non2xx": bad[0], "errors": bad[1]}
