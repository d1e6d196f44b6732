"""py-spy around a measurement: GIL-holding samples of the server workers as collapsed stacks,
and their shares by area. Needs py-spy (`pip install py-spy`) and ptrace permission on the
workers; when either is missing the result says why instead of failing the benchmark."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path


class Profile:
    """py-spy on the registry workers (GIL-holding samples, collapsed stacks) during one burst.
    Needs ptrace permission on the workers; when py-spy is missing or refused, says why."""

    def __init__(self, pids: list[int], out_dir: Path, tag: str) -> None:
        self.procs: list[tuple[subprocess.Popen, Path]] = []
        self.note = ""
        exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(exe).exists():
            self.note = "py-spy not installed (pip install py-spy)"
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        for pid in pids:
            path = out_dir / f"campaign-{tag}-{pid}.txt"
            p = subprocess.Popen([exe, "record", "-p", str(pid), "-r", "100", "--gil", "--nonblocking", "-f", "raw",
                                  "-o", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            self.procs.append((p, path))
        time.sleep(1.0)
        for p, _ in self.procs:
            if p.poll() is not None:
                self.note = "py-spy refused: " + p.stdout.read().decode(errors="replace").strip()[-200:]

    def stop(self) -> dict:
        files = []
        for p, path in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
            if path.exists():
                files.append(path)
        summary = summarise_profile(files) if files else {}
        return {"note": self.note, "files": [str(f) for f in files], **summary}


# Where a GIL sample goes, first match wins (substrings of the collapsed stack, outermost first).
CATEGORIES = (
    ("audit sealer thread", ("sealing.py",)),
    ("report refresher thread", ("reports/background",)),
    ("encryption, MACs, blind indexes", ("cryptography", "codec.py", "event_mac", "receipt", "hmac")),
    ("psycopg / SQLAlchemy (statements, round trips, rows)", ("psycopg", "sqlalchemy")),
    ("schedule judgement", ("schedules/", "immunizations/validation", "immunizations/intake", "judge")),
    ("request validation and JSON (pydantic, json)", ("pydantic", "json/", "orjson")),
    ("registry code (services, sync, audit)", ("registry/", "security/")),
    ("HTTP, middleware, FastAPI dependencies", ("starlette", "fastapi", "uvicorn", "h11", "httptools", "api/")),
)


def summarise_profile(files: list[Path]) -> dict:
    shares: Counter = Counter()
    leaves: Counter = Counter()
    total = 0
    for f in files:
        if not f.exists():  # py-spy refused or wrote nothing
            continue
        for line in f.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            total += n
            cat = next((name for name, keys in CATEGORIES if any(k in stack for k in keys)), "other (idle loop, threads)")
            shares[cat] += n
            leaves[stack.split(";")[-1].strip()] += n
    if not total:
        return {"samples": 0}
    return {"samples": total, "shares": {k: round(v / total, 3) for k, v in shares.most_common()},
            "top_leaves": [(k, round(v / total, 3)) for k, v in leaves.most_common(12)]}
