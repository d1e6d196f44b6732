"""A full `nhr dedupe run` of a province on PostgreSQL, measured from outside (issue 13).

1. A database of its own on the server; the schema (`bootstrap.init`); a synthetic province
   (registry/demo/linkage_population.py: `size` children and about 15% injected duplicates)
   loaded by COPY as registration leaves it: encrypted fields, blind indexes, blocking keys.
2. The real CLI, `nhr dedupe run --province PK-PB [--workers N]`, as its own process: wall time,
   CPU (user + system, its forked workers included: `wait4`), peak RSS, pairs scored a second,
   candidates written; the queue against the injected truth (precision, recall, F1 per grade).
3. `checks`: a rerun (idempotent: no new candidate, the queue unchanged) and, with the queue
   emptied (unless `empty_before_kill` is False: cheaper, the resumed run then must propose
   nothing), a run killed (SIGKILL, its process group) once it has checkpointed 40% of the
   blocking units, then rerun: it says it resumed, and the queue equals the uninterrupted one.

PostgreSQL's own CPU is not in the figures (another process). Counts only: nothing decrypted
is printed.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text

PROVINCE = "PK-PB"
SEED = 2026


def _nhr() -> str:
    exe = Path(sys.executable).with_name("nhr")
    return str(exe) if exe.exists() else shutil.which("nhr") or "nhr"


class CliRun:
    """`nhr dedupe run` as a child process in its own process group; `wait4` gives its CPU and
    peak RSS (forked scoring workers included, as the pool waits for them)."""

    def __init__(self, env: dict, workers: int, log: Path) -> None:
        self.log = log
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen([_nhr(), "dedupe", "run", "--province", PROVINCE, "--workers", str(workers)],
                                     env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)

        self._ended: tuple | None = None

    def running(self) -> bool:
        if self._ended is None:
            pid, status, ru = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                self._ended = (status, ru)
        return self._ended is None

    def wait(self) -> dict:
        status, ru = self._ended or os.wait4(self.proc.pid, 0)[1:]
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - self.t0
        out = self.log.read_text(errors="replace")
        m = re.search(r"run\s+\S+(\s+\(resumed\))?:\s+(\d+)\s+records,\s+(\d+)\s+pairs\s+scored,\s+(\d+)\s+new\s+candidates",
                      out)
        return {"rc": self.proc.returncode, "wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "user": ru.ru_utime,
                "sys": ru.ru_stime, "rss_mb": ru.ru_maxrss / 1024, "resumed": bool(m and m.group(1)),
                "records": int(m.group(2)) if m else 0, "pairs": int(m.group(3)) if m else 0,
                "new": int(m.group(4)) if m else 0, "tail": out[-300:] if not m else ""}

    def kill(self) -> None:
        if self.running():
            os.killpg(self.proc.pid, signal.SIGKILL)


def queue(engine) -> dict[tuple[str, str], str]:
    with engine.connect() as c:
        return {(str(r.left_id), str(r.right_id)): r.grade for r in
                c.execute(text("SELECT left_id, right_id, grade FROM link_candidates WHERE source = 'dedupe'"))}


def quality(found: dict[tuple[str, str], str], truth: set) -> list[tuple[str, int, float, float, float]]:
    out = []
    for label, grades in (("certain", {"certain"}), ("certain + probable", {"certain", "probable"}),
                          ("review queue (>= possible)", {"certain", "probable", "possible"})):
        pairs = {k for k, g in found.items() if g in grades}
        tp = len(pairs & truth)
        p = tp / len(pairs) if pairs else 1.0
        r = tp / len(truth) if truth else 1.0
        out.append((label, len(pairs), p, r, 2 * p * r / (p + r) if p + r else 0.0))
    return out


def _blocks_done(engine) -> int:
    with engine.connect() as c:
        n = c.execute(text("SELECT json_array_length(blocks_done::json) FROM dedupe_runs "
                           "WHERE province = :p AND status = 'running'"), {"p": PROVINCE}).scalar()
    return n or 0


def _row(name: str, r: dict) -> str:
    return (f"| {name} | {r['wall']:.0f} s ({r['wall'] / 60:.1f} min) | {r['cpu']:.0f} s ({r['user']:.0f} user, "
            f"{r['sys']:.0f} sys) | {r['rss_mb']:,.0f} MB | {r['records']:,} | {r['pairs']:,} | "
            f"{r['pairs'] / r['wall'] if r['wall'] else 0:,.0f} | {r['new']:,} | {'yes' if r['resumed'] else 'no'} |")


def measure(pg: str, size: int, *, workers: int = 1, checks: bool = False, db: str | None = None,
            keep: bool = False, reuse: Path | None = None, empty_before_kill: bool = True,
            load_only: bool = False, key_dir: Path | None = None) -> list[str]:
    from registry import bootstrap
    from registry.demo import linkage_population as population
    from registry.linkage import blocking
    from registry.runtime import Runtime
    from registry.settings import Settings

    from bench import province_copy

    db = db or f"nhr_dedupe_full_{datetime.now(UTC):%Y%m%d%H%M%S}"
    if load_only and reuse is not None:
        raise ValueError("--load-only loads a new database; --reuse runs on a loaded one")
    keep = keep or load_only  # a load without a run is only worth keeping
    if key_dir is not None and reuse is None:
        key_dir.parent.mkdir(parents=True, exist_ok=True)  # the keyring itself is created by the runtime
    key_dir = reuse or key_dir or Path(tempfile.mkdtemp(prefix="nhr-dedupe-full-")) / "keyring"
    url = pg.rsplit("/", 1)[0] + f"/{db}"
    admin = create_engine(pg, isolation_level="AUTOCOMMIT")
    if reuse is None:
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{db}"'))
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    logs = key_dir.parent
    lines: list[str] = []
    try:
        t = time.perf_counter()
        truth_file = key_dir.parent / f"truth-{size}.tsv"  # the injected pairs, kept for --reuse
        if reuse is not None and truth_file.exists():
            recs, truth = [], {tuple(line.split("\t")) for line in truth_file.read_text().splitlines()}
        else:
            recs = population.generate(size, seed=SEED, province=PROVINCE)
            truth = population.truth_pairs(recs)
            truth_file.write_text("".join(f"{a}\t{b}\n" for a, b in sorted(truth)))
        t_gen = time.perf_counter() - t
        if reuse is None:
            settings = Settings(env="development", database_url=url, key_dir=key_dir,
                                passwords={"argon2_memory_kib": 1024, "argon2_time_cost": 1},
                                audit={"seal_interval_seconds": 0}, reports={"refresh_interval_seconds": 0})
            rt = Runtime.build(settings, provisioning=True)
            bootstrap.init(rt)
            t = time.perf_counter()
            province_copy.load(rt, url, recs, PROVINCE, workers=2)
            t_load = time.perf_counter() - t
            rt.engine.dispose()
            load_note = f"loaded by COPY in {t_load:.0f} s wall (2 processes; generating {t_gen:.0f} s)"
        else:  # a fresh start on the kept database: the queue and the runs of earlier measurements go
            with engine.begin() as conn:
                conn.execute(text("DELETE FROM link_candidates WHERE source = 'dedupe'"))
                conn.execute(text("DELETE FROM dedupe_runs WHERE province = :p"), {"p": PROVINCE})
            load_note = f"loaded earlier by COPY (`--reuse`; the truth read or generated again in {t_gen:.0f} s)"
        del recs
        if load_only:
            return [f"{PROVINCE} ({size:,} children, {len(truth):,} injected duplicate pairs, seed {SEED}) {load_note}; "
                    f"database {db}, keyring {key_dir}. Time the dedupe alone (it empties the queue and the runs "
                    f"first): python -m bench.matching_dedupe --pg {pg} --full-run --size {size} --db {db} "
                    f"--reuse {key_dir} --keep --workers 2 (without --keep the database is dropped at the end)"]
        env = {**os.environ, "NHR_ENV": "development", "NHR_DATABASE_URL": url, "NHR_KEY_DIR": str(key_dir)}
        load1 = os.getloadavg()
        first = CliRun(env, workers, logs / "run-1.log").wait()
        found = queue(engine)
        lines += [f"`nhr dedupe run --province {PROVINCE} --workers {workers}` on PostgreSQL, {first['records']:,} records "
                  f"({len(truth):,} true duplicate pairs, seed {SEED}), {load_note}. Load average at the start "
                  f"{load1[0]:.1f} (1 min), at the end {os.getloadavg()[0]:.1f}: the machine is shared.", "",
                  "| run | wall | CPU (the CLI and its workers) | peak RSS | records | pairs scored | pairs/s (wall) "
                  "| new candidates | resumed |", "|---|---|---|---|---|---|---|---|---|",
                  _row("1: full run, empty queue", first)]
        if first["rc"] != 0:
            lines.append(f"run 1 failed (exit {first['rc']}): {first['tail']}")
        if checks:
            again = CliRun(env, workers, logs / "run-2.log").wait()
            lines.append(_row("2: rerun (idempotent)", again))
            same = queue(engine) == found
            if empty_before_kill:
                with engine.begin() as conn:
                    conn.execute(text("DELETE FROM link_candidates WHERE source = 'dedupe'"))
            victim = CliRun(env, workers, logs / "run-3.log")
            target = int(0.4 * len(blocking.units()))
            while victim.running() and _blocks_done(engine) < target:
                time.sleep(1.0)
            at = _blocks_done(engine)
            victim.kill()
            killed = victim.wait()
            lines.append(_row(f"3: {'emptied queue, ' if empty_before_kill else ''}killed at "
                              f"{at}/{len(blocking.units())} units", killed))
            resumed = CliRun(env, workers, logs / "run-4.log").wait()
            lines.append(_row("4: rerun after the kill", resumed))
            after = queue(engine)
            lines += ["", f"Rerun: {again['new']} new candidates, queue {'unchanged' if same else 'CHANGED'}. "
                      f"Killed run resumed: {'yes' if resumed['resumed'] else 'NO'}; the queue after the resume "
                      f"{'equals' if after == found else 'DIFFERS FROM'} the uninterrupted run's "
                      f"({len(after):,} vs {len(found):,} pairs)"
                      + ("." if empty_before_kill else " (the queue was not emptied before the kill: the resumed "
                                                       "run must propose nothing new)." )]
        lines += ["", "| queue against the injected duplicates | pairs | precision | recall | F1 |", "|---|---|---|---|---|"]
        lines += [f"| {label} | {n:,} | {p:.4f} | {r:.4f} | {f:.4f} |" for label, n, p, r, f in quality(found, truth)]
        return lines
    finally:
        engine.dispose()
        if not keep:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
            shutil.rmtree(key_dir.parent, ignore_errors=True)
        else:
            lines.append(f"\n(kept: --db {db} --reuse {key_dir})")
        admin.dispose()
