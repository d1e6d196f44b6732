"""The results table (rich) and the machine description. Numbers only: no patient data."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys

import psycopg
from rich.console import Console
from rich.table import Table


def machine(url: str, generator: str) -> dict:
    mem_kib = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    cpu = ""
    try:
        cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "")
    except OSError:
        pass
    with psycopg.connect(url) as c:
        pg = c.execute("SHOW server_version").fetchone()[0]
        shared = c.execute("SHOW shared_buffers").fetchone()[0]
        sync = c.execute("SHOW synchronous_commit").fetchone()[0]
    gen = generator
    if generator == "wrk" and shutil.which("wrk"):
        out = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
        gen = (out.stdout or out.stderr).split("Copyright")[0].strip() or "wrk"
    else:
        gen = "built-in Python asyncio generator (install wrk for higher ceilings: apt-get install wrk)"
    return {"nproc": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem_kib / 1024 / 1024, 1),
            "python": sys.version.split()[0], "platform": platform.platform(), "postgres": pg,
            "postgres_shared_buffers": shared, "postgres_synchronous_commit": sync, "load_generator": gen,
            "note": "load generator, servers and PostgreSQL share the same cores"}


def _f(x, fmt="{:,.0f}") -> str:
    return "-" if x is None else fmt.format(x)


def _cpu(w: dict) -> str:
    if w.get("cpu_us") is None:
        return "-"
    ratio = w.get("cpu_ratio_trivial")
    return f"{w['cpu_us']:,.0f}" + (f" ({ratio:.3f})" if ratio else "")


def show(doc: dict, console: Console | None = None) -> None:
    console = console or Console(width=max(150, Console().width))
    m = doc["meta"]
    mc = m["machine"]
    console.print(f"[bold]NHR benchmark[/] ({m['mode']} mode) {m['started']}: {m['patients']:,} patients, {m['doses']:,} doses; "
                  f"{m['runs']} rounds x {m['duration_s']:g} s, {m['concurrency']} connections, {m['workers']} uvicorn workers")
    console.print(f"machine: {mc['nproc']} cores ({mc['cpu']}), {mc['memory_gib']} GiB, Python {mc['python']}, "
                  f"PostgreSQL {mc['postgres']}; load generator: {mc['load_generator']} ({mc['note']})", soft_wrap=True)
    t = Table(show_lines=False)
    for col, just in (("workload", "left"), ("rate/s", "right"), ("p50 ms", "right"), ("p99 ms", "right"),
                      ("spread", "right"), ("x trivial", "right"), ("CPU us (x trivial)", "right"), ("x baseline", "right"),
                      ("x DB floor", "right"),
                      ("errors", "right"), ("target", "left"), ("", "left")):
        t.add_column(col, justify=just)
    for name, w in doc["workloads"].items():
        base = f"{_f(w.get('ratio_baseline'), '{:.2f}')} ({w['baseline']})" if w.get("baseline") else "-"
        status = {"pass": "[green]pass[/]", "short": "[red]short[/]"}.get(w["status"], "")
        t.add_row(name, _f(w["rate"]) if w["server"] != "probe" else "-", _f(w["p50_ms"], "{:.1f}"), _f(w["p99_ms"], "{:.1f}"),
                  f"{w['spread']:.0%}", _f(w.get("ratio_trivial"), "{:.3f}"), _cpu(w), base,
                  _f(w.get("ratio_floor"), "{:.3f}"), str(w["errors"] + w["non2xx"] + w.get("refused_records", 0)), w["target"], status)
    for o in doc.get("one_off", []):
        status = {"pass": "[green]pass[/]", "short": "[red]short[/]"}.get(o["status"], "")
        t.add_row(o["name"], "-", f"{o['seconds'] * 1000:,.0f}", "-", "1 run", "-", "-", "-", "-", "-", o["target"], status)
    for n in doc["not_yet_implemented"]:
        t.add_row(f"[dim]{n['name']}[/]", "-", "-", "-", "-", "-", "-", "-", "-", "-", n["target"], f"[dim]{n['status'].split(';')[0]}[/]")
    console.print(t)
    console.print("[dim]" + "; ".join([f"{n}: {w['title']}" for n, w in doc["workloads"].items()]
                                      + [f"{o['name']}: {o['title']} (time in the p50 column)" for o in doc.get("one_off", [])]) + "[/]")
    rss = doc["memory"]["peak_rss_mb"]
    console.print("peak RSS (VmHWM) per worker, MiB: " +
                  "; ".join(f"{k}: {', '.join(f'{v:.0f}' for v in vals)}" for k, vals in rss.items()))
    after = [f"{n} {w['rss_mb_after_round1']:.0f}" for n, w in doc["workloads"].items()
             if w["server"] == "registry" and "rss_mb_after_round1" in w]
    console.print("largest registry worker's RSS after each workload in round 1 (login runs last), MiB: " + ", ".join(after))
    console.print("[dim]CPU us: user + system CPU of the server's workers per request (per record for the uploads), "
                  "background sealing and refreshing included (`nhr worker` beside the API, as in production; "
                  "NHR_BENCH_IN_PROCESS_WORKER=1: inside the API's workers); in brackets the trivial endpoint's CPU per request over "
                  "it (what the rate ratio would be if the server had the cores to itself).[/]")
    console.print("[dim]ratios are medians of per-round ratios (A/B interleaved); spread = (max - min) / median of the rates; "
                  "x DB floor compares with raw PK selects; the copy row is rows/s, its latencies are per 10,000-row batch.[/]")


def markdown(doc: dict) -> str:
    """The same table as Markdown, for bench/README.md."""
    rows = ["| workload | rate/s | p50 ms | p99 ms | spread | x trivial | CPU us (x trivial) | x baseline | x DB floor | target | |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for name, w in doc["workloads"].items():
        base = f"{_f(w.get('ratio_baseline'), '{:.2f}')} ({w['baseline']})" if w.get("baseline") else "-"
        rate = _f(w["rate"]) if w["server"] != "probe" else "-"
        rows.append(f"| {name}: {w['title']} | {rate} | {_f(w['p50_ms'], '{:.1f}')} | {_f(w['p99_ms'], '{:.1f}')} | "
                    f"{w['spread']:.0%} | {_f(w.get('ratio_trivial'), '{:.3f}')} | {_cpu(w)} | {base} | "
                    f"{_f(w.get('ratio_floor'), '{:.3f}')} | {w['target']} | {w['status']} |")
    for o in doc.get("one_off", []):
        rows.append(f"| {o['name']}: {o['title']} | - | {o['seconds'] * 1000:,.0f} | - | 1 run | - | - | - | - | {o['target']} | {o['status']} |")
    for n in doc["not_yet_implemented"]:
        rows.append(f"| {n['name']}: {n['title']} | - | - | - | - | - | - | - | - | {n['target']} | {n['status']} |")
    return "\n".join(rows)
