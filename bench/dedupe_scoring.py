"""The CPU of `nhr dedupe run`'s matching phases in memory, A/B between two checkouts (issue 13).

A synthetic province (registry/demo/linkage_population.py, PK-PB, seed 2026) is generated and
prepared in memory (no database: reading and writing are measured by `--full-run`), then timed
in process CPU seconds: the blocking index (`blocking.index`) and scoring every blocking unit as
a dedupe run's worker does (`dedupe.score_unit`, one process). Each round runs in a child process
whose `PYTHONPATH` is one checkout, A and B alternating, so both meet the same machine; the
output also fingerprints the graded pairs (ids, levels, weight, grade): equal fingerprints mean
the same queue.

    python -m bench.dedupe_scoring --size 60000 --rounds 3 --a /work/main --b .

Prints a Markdown table for bench/RESULTS.md: per round and arm, CPU seconds of each phase,
pairs scored, pairs per CPU second of scoring, and the ratio B/A of the medians.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _child(size: int, seed: int) -> dict:
    from bench.matching import prepare_all
    from registry.demo import linkage_population as population
    from registry.linkage import blocking, dedupe, scoring

    prep = prepare_all(population.generate(size, seed=seed, province="PK-PB"))
    model = scoring.Model.from_parameters("bench", scoring.default_parameters(), scoring.DEFAULT_THRESHOLDS)
    c = time.process_time()
    with dedupe._long_lived() as built:  # as a run builds it: the cyclic GC off, then frozen
        idx = blocking.index(prep)
        built()
        t_index = time.process_time() - c
        c = time.process_time()
        n, graded = 0, []
        for unit in blocking.units():
            _, n_pairs, found = dedupe.score_unit(unit, (prep, idx, model))
            n += n_pairs
            graded += [(unit, i, j, s) for i, j, s in found]
        t_score = time.process_time() - c
    h = hashlib.sha256()
    for unit, i, j, s in graded:  # in the order the run proposes them
        h.update(f"{unit}|{prep[i]['unique_id']}|{prep[j]['unique_id']}|{sorted(s.levels.items())}|{s.weight!r}|"
                 f"{s.probability!r}|{s.grade}\n".encode())
    return {"records": len(prep), "index_cpu": t_index, "score_cpu": t_score, "pairs": n, "graded": len(graded),
            "fingerprint": h.hexdigest()[:16], "load": os.getloadavg()[0]}


def _round(checkout: Path, size: int, seed: int) -> dict:
    """One child process importing `registry` (and bench.matching) from `checkout`; this file's
    `_child` runs in it (a baseline checkout need not have this file)."""
    env = {**os.environ, "PYTHONPATH": f"{checkout.resolve()}"}
    me = str(Path(__file__).resolve())
    code = (f"import sys; sys.argv = ['dedupe_scoring', '--child', '--size', '{size}', '--seed', '{seed}']; "
            f"exec(compile(open({me!r}).read(), {me!r}, 'exec'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=checkout, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=60_000, help="children before the injected duplicates")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--rounds", type=int, default=3, help="A/B rounds, alternating (A B, B A, ...)")
    ap.add_argument("--a", type=Path, default=None, help="checkout A (the baseline), e.g. /work/main")
    ap.add_argument("--b", type=Path, default=Path("."), help="checkout B (default: this one)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.size, args.seed)))
        return 0
    arms = {"A": args.a, "B": args.b} if args.a else {"B": args.b}
    res: dict[str, list[dict]] = {k: [] for k in arms}
    load0 = os.getloadavg()
    lines = ["| round | arm | records | index CPU s | scoring CPU s | pairs scored | pairs / scoring CPU s | graded | "
             "fingerprint | load (1 min) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in range(args.rounds):
        order = list(arms) if r % 2 == 0 else list(reversed(arms))
        for arm in order:
            x = _round(arms[arm], args.size, args.seed)
            res[arm].append(x)
            lines.append(f"| {r + 1} | {arm} | {x['records']:,} | {x['index_cpu']:.2f} | {x['score_cpu']:.2f} | "
                         f"{x['pairs']:,} | {x['pairs'] / x['score_cpu']:,.0f} | {x['graded']:,} | {x['fingerprint']} | "
                         f"{x['load']:.1f} |")
            print(lines[-1], file=sys.stderr, flush=True)
    lines.insert(0, f"A = {args.a}, B = {args.b}; load average at the start {load0[0]:.1f}, at the end "
                    f"{os.getloadavg()[0]:.1f}.\n")
    if "A" in res:
        med = {k: {p: statistics.median(x[p] for x in v) for p in ("index_cpu", "score_cpu")} for k, v in res.items()}
        same = {x["fingerprint"] for v in res.values() for x in v}
        lines += ["", f"Medians: index {med['A']['index_cpu']:.2f} -> {med['B']['index_cpu']:.2f} s "
                      f"(B/A {med['B']['index_cpu'] / med['A']['index_cpu']:.2f}); scoring {med['A']['score_cpu']:.2f} -> "
                      f"{med['B']['score_cpu']:.2f} s (B/A {med['B']['score_cpu'] / med['A']['score_cpu']:.2f}). "
                      f"Graded pairs: {'the same fingerprint in every round' if len(same) == 1 else 'FINGERPRINTS DIFFER'}."]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
