"""Matching bench: quality (precision, recall, F1 per grade threshold) and speed (candidate pairs
a second, the 1M-children dedupe extrapolated), on a synthetic population with injected
duplicates (registry/demo/linkage_population.py), in memory. Optionally the duplicate check's
cost at registration (--registration: service calls on a database, check on vs off, A/B
interleaved, median of rounds).

    python -m bench.matching                      # 50,000 children, configured model
    python -m bench.matching --scale 100000 --em  # EM-estimated parameters (Splink) as well
    python -m bench.matching --registration       # + registration with vs without the check

Prints a Markdown section for bench/RESULTS.md. Figures are ratios or counts measured in the
same run; quality is independent of the machine.
"""

from __future__ import annotations

import argparse
import math
import time
from datetime import UTC, datetime

from registry.demo import linkage_population as population
from registry.linkage import blocking, comparisons, estimation, population_model, scoring


def prepare_all(recs: list[dict]) -> list[dict]:
    out = []
    for r in recs:
        p = comparisons.prepare(given_name=r["given_name"], family_name=r["family_name"], guardian_name=r["guardian_name"],
                                birth_date=r["birth_date"], sex=r["sex"], guardian_cnic=r["guardian_cnic"], bform=r["bform"],
                                phone=r["phone"], facility=r["facility"], district=r["district"], province=r["province"])
        p["unique_id"] = r["unique_id"]
        out.append(p)
    return out


TIMES: dict[str, tuple[float, float]] = {}  # phase -> (wall seconds, CPU seconds of this process)


class phase:
    """Times a phase in wall-clock and process CPU seconds: on a shared machine the CPU time is
    what the work costs, the wall time what the neighbours left of it."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self):
        self.t, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        TIMES[self.name] = (time.perf_counter() - self.t, time.process_time() - self.c)


def score_all(model: scoring.Model, prep: list[dict], workers: int = 1) -> tuple[list[tuple[str, str, float]], int, float]:
    """(a, b, weight) of every blocked pair graded at least possible; pairs scored; seconds.
    Scored as `nhr dedupe run` scores (registry/linkage/dedupe.score_unit), in `workers` processes.
    The phases `index` and `pairs` are timed in TIMES."""
    from registry.linkage import dedupe

    t = time.perf_counter()
    with phase("index"):
        state = (prep, blocking.index(prep), model)
    p = phase("pairs").__enter__()
    graded, n = [], 0
    for _, n_pairs, found in dedupe._scored_units(blocking.units(), workers, state):
        n += n_pairs
        for i, j, s in found:
            a, b = sorted((prep[i]["unique_id"], prep[j]["unique_id"]))
            graded.append((a, b, s.weight))
    p.__exit__()
    return graded, n, time.perf_counter() - t


def quality(graded, truth: set, threshold: float) -> dict:
    found = {(a, b) for a, b, w in graded if w >= threshold}
    tp = len(found & truth)
    p = tp / len(found) if found else 1.0
    r = tp / len(truth) if truth else 1.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"pairs": len(found), "precision": p, "recall": r, "f1": f1}


GRADED: list = []  # the last evaluation's graded pairs (for the threshold sweep)


def evaluate(model: scoring.Model, prep: list[dict], truth: set, workers: int = 1) -> dict:
    graded, n, secs = score_all(model, prep, workers)
    GRADED[:] = graded
    out = {"pairs_scored": n, "seconds": secs, "pairs_per_second": n / secs if secs else 0.0}
    for g in ("certain", "probable", "possible"):
        out[g] = quality(graded, truth, model.thresholds[g])
    return out


def _rows(name: str, res: dict) -> list[str]:
    lines = [f"| {name} | threshold | pairs | precision | recall | F1 |", "|---|---|---|---|---|---|"]
    for g, label in (("certain", "auto (certain)"), ("probable", "likely (certain+probable: 409 at registration)"),
                     ("possible", "review (>= possible)")):
        q = res[g]
        lines.append(f"| | {label} | {q['pairs']} | {q['precision']:.4f} | {q['recall']:.4f} | {q['f1']:.4f} |")
    return lines


def bloom_quality(n: int, seed: int) -> list[str]:
    """Cross-province encodings on their own population, blocked by birth year and sex: the
    record-level CLK (bloom.py, model clk-1, Dice thresholds) before, the field-level encodings
    (bloom_fields.py, model fbf-1, the engine's levels, weights and thresholds) after. Comparing
    every pair of a block is quadratic: done only up to QUADRATIC_MAX pairs (then only the
    LSH bands / candidate keys, which the national layer uses)."""
    from collections import defaultdict

    from registry.linkage import bloom, bloom_fields

    recs = population.generate(n, seed=seed + 1)
    truth = population.truth_pairs(recs)
    prep = prepare_all(recs)
    keys = bloom.derive_keys(b"bench-national-linkage-secret-32")
    t, c = time.perf_counter(), time.process_time()
    clks = [bloom.encode(keys, p) for p in prep]
    t_enc, c_enc = time.perf_counter() - t, time.process_time() - c
    t, c = time.perf_counter(), time.process_time()
    fencs = [bloom_fields.encode(keys, p) for p in prep]
    t_fenc, c_fenc = time.perf_counter() - t, time.process_time() - c
    blocks = defaultdict(list)
    for i, p in enumerate(prep):
        blocks[bloom_fields.block_of(p)].append(i)
    compared = sum(len(ids) * (len(ids) - 1) // 2 for ids in blocks.values())
    quadratic = compared <= QUADRATIC_MAX
    uid = [p["unique_id"] for p in prep]
    scored, t_cmp, c_cmp = [], 0.0, 0.0
    if quadratic:
        t, c = time.perf_counter(), time.process_time()
        for ids in blocks.values():
            for k, a in enumerate(ids):
                for b in ids[k + 1:]:
                    d = bloom.dice(clks[a], clks[b])
                    if d >= bloom.DICE_POSSIBLE:
                        scored.append((*sorted((uid[a], uid[b])), d))
        t_cmp, c_cmp = time.perf_counter() - t, time.process_time() - c
    # the same blocks with LSH banding (bloom.lsh_pairs): only pairs sharing a band are compared
    t, c, lsh_scored, lsh_compared = time.perf_counter(), time.process_time(), [], 0
    for ids in blocks.values():
        members = [(uid[i], i, clks[i]) for i in ids]  # every record its own "custodian": all pairs
        for a, b in bloom.lsh_pairs(members):
            lsh_compared += 1
            d = bloom.dice(members[a][2], members[b][2])
            if d >= bloom.DICE_POSSIBLE:
                lsh_scored.append((*sorted((members[a][0], members[b][0])), d))
    t_lsh, c_lsh = time.perf_counter() - t, time.process_time() - c
    # field-level encodings: candidate keys (bloom_fields.candidate_pairs), engine scoring
    t, c, f_scored, f_compared, f_block = time.perf_counter(), time.process_time(), [], 0, []
    for ids in blocks.values():
        members = [(uid[i], i, fencs[i]) for i in ids]
        shift = bloom_fields.model_for_block(len(members)).prior_weight - bloom_fields.MODEL.prior_weight  # <= 0
        for a, b in bloom_fields.candidate_pairs(members):
            f_compared += 1
            sc = bloom_fields.score(members[a][2], members[b][2])
            if sc.grade:
                f_scored.append((*sorted((members[a][0], members[b][0])), sc.weight))
                f_block.append((*sorted((members[a][0], members[b][0])), sc.weight + shift))
    t_f, c_f = time.perf_counter(), time.process_time()
    t_f, c_f = t_f - t, c_f - c
    f_every = []
    if quadratic and compared <= QUADRATIC_MAX // 4:
        for ids in blocks.values():
            for k, a in enumerate(ids):
                for b in ids[k + 1:]:
                    sc = bloom_fields.score(fencs[a], fencs[b])
                    if sc.grade:
                        f_every.append((*sorted((uid[a], uid[b])), sc.weight))
    na = "n/a"
    lines = [f"| {len(recs):,} records ({len(truth):,} true pairs) | threshold | every pair of the block: pairs / precision / recall / F1 "
             "| national layer's candidates: pairs / precision / recall / F1 |", "|---|---|---|---|"]

    def cells(graded, th):
        if not graded and not quadratic:
            return na
        q = quality(graded, truth, th)
        return f"{q['pairs']:,} / {q['precision']:.4f} / {q['recall']:.4f} / {q['f1']:.4f}"

    for label, th in (("certain (Dice >= 0.92)", bloom.DICE_CERTAIN), ("probable (>= 0.85)", bloom.DICE_PROBABLE),
                      ("review (>= 0.78)", bloom.DICE_POSSIBLE)):
        lines.append(f"| before: record-level CLK (clk-1), LSH bands | {label} | {cells(scored, th)} | {cells(lsh_scored, th)} |")
    th = bloom_fields.MODEL.thresholds
    for g, label in (("certain", "certain (weight >= {})"), ("probable", "probable (>= {})"), ("possible", "review (>= {})")):
        every = cells(f_every, th[g]) if f_every else na
        lines.append(f"| field-level (fbf-1), fixed prior, candidate keys | {label.format(th[g])} | {every} | {cells(f_scored, th[g])} |")
    for g, label in (("certain", "certain (weight >= {})"), ("probable", "probable (>= {})"), ("possible", "review (>= {})")):
        lines.append(f"| field-level (fbf-1), per-block prior, candidate keys | {label.format(th[g])} | n/a | {cells(f_block, th[g])} |")
    lines += ["", f"Encoding, CPU a record: record-level CLK {c_enc / len(recs) * 1e6:.0f} us, field-level "
              f"{c_fenc / len(recs) * 1e6:.0f} us (wall {t_enc / len(recs) * 1e6:.0f} / {t_fenc / len(recs) * 1e6:.0f} us); "
              f"blob {bloom.FOLDED // 8} / {bloom_fields.SIZE} bytes. Pairs in the blocks (birth year and sex): {compared:,}"
              + (f", every pair compared with the CLK in {t_cmp:.1f} s wall / {c_cmp:.1f} s CPU" if quadratic else " (not all compared)")
              + f". CLK LSH bands ({bloom.LSH_BANDS} of {bloom.LSH_ROWS} bits): {lsh_compared:,} pairs "
              f"({lsh_compared / compared:.1%}), {t_lsh:.1f} s wall / {c_lsh:.1f} s CPU; field-level candidate keys: "
              f"{f_compared:,} pairs ({f_compared / compared:.1%}), {t_f:.1f} s wall / {c_f:.1f} s CPU, keys and scoring included. "
              f"Blocks: {len(blocks)}, {min(map(len, blocks.values())):,} to {max(map(len, blocks.values())):,} encodings; "
              f"per-block prior {bloom_fields.MODEL.prior:.3g} at <= {bloom_fields.PRIOR_BLOCK_RECORDS:,} a block, "
              f"{bloom_fields.model_for_block(max(map(len, blocks.values()))).prior:.3g} at the largest."]
    return lines


QUADRATIC_MAX = 20_000_000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", "--size", type=int, default=50_000, help="children before duplicates (default 50,000)")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--province", default=None, metavar="CODE",
                    help="every child in this province's facilities (e.g. PK-PB: `nhr dedupe run --province`'s population)")
    ap.add_argument("--workers", type=int, default=1, help="processes scoring blocking units, as nhr dedupe run --workers (default 1)")
    ap.add_argument("--fixed-prior", action="store_true",
                    help="score with the model as stored only (no prior for the population size, no name term frequencies)")
    ap.add_argument("--em", action="store_true", help="also estimate the parameters by EM (Splink) and evaluate them")
    ap.add_argument("--registration", action="store_true", help="also measure registration with vs without the check")
    ap.add_argument("--bloom", type=int, default=0, metavar="N",
                    help="also the cross-province Bloom-filter linkage on N children (quadratic per birth year and sex)")
    args = ap.parse_args(argv)

    with phase("generate"):
        recs = population.generate(args.scale, seed=args.seed, province=args.province)
        truth = population.truth_pairs(recs)
    with phase("prepare"):
        prep = prepare_all(recs)
    t_prep = TIMES["prepare"][0]
    lines = [f"## {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {len(recs):,} records ({len(truth):,} true duplicate pairs), "
             f"seed {args.seed}" + (f", all in {args.province}" if args.province else ""), ""]
    configured = scoring.Model.from_parameters("configured-1", scoring.default_parameters(), scoring.DEFAULT_THRESHOLDS)
    fitted = population_model.for_records(configured, prep)
    if not args.fixed_prior:  # before/after in the same run: the stored model as is, then as `nhr dedupe run` fits it
        res_fixed = evaluate(configured, prep, truth, args.workers)
        lines += _rows("configured model, fixed prior, no term frequencies (before)", res_fixed) + [""]
    res = evaluate(configured if args.fixed_prior else fitted, prep, truth, args.workers)
    configured_graded = list(GRADED)
    lines += _rows("configured model" if args.fixed_prior else
                   f"configured model fitted to the {len(prep):,} records: prior {fitted.prior:.3g}, name term frequencies (after)", res)
    speed = res
    if args.em:
        t = time.perf_counter()
        params = estimation.estimate(prep)
        t_em = time.perf_counter() - t
        em = scoring.Model.from_parameters("em", params, scoring.DEFAULT_THRESHOLDS)
        res_em = evaluate(em if args.fixed_prior else population_model.for_records(em, prep), prep, truth)
        lines += [""] + _rows(f"EM-estimated (Splink, {t_em:.0f} s)", res_em)
    per_rec = t_prep / len(recs)
    lines += ["", f"Phases at {len(prep):,} records, wall / CPU seconds of this process (the CPU time is the work; the "
              "wall time adds what the machine's other jobs took): "
              + ", ".join(f"{k} {TIMES[k][0]:.1f} / {TIMES[k][1]:.1f}" for k in ("prepare", "index", "pairs") if k in TIMES)
              + f"; **blocking and scoring {TIMES['index'][0] + TIMES['pairs'][0]:.1f} s wall, "
              f"{TIMES['index'][1] + TIMES['pairs'][1]:.1f} s CPU**; with preparing, "
              f"{(t_prep + TIMES['index'][0] + TIMES['pairs'][0]) / 60:.1f} min wall, "
              f"{(TIMES['prepare'][1] + TIMES['index'][1] + TIMES['pairs'][1]) / 60:.1f} min CPU."]
    lines += ["", f"Pairs blocked and scored: {res['pairs_scored']:,}, "
              f"{res['pairs_scored'] / (TIMES['index'][1] + TIMES['pairs'][1]):,.0f} pairs per CPU second "
              f"({res['pairs_scored'] / (TIMES['index'][0] + TIMES['pairs'][0]):,.0f} per wall second), index included."]
    sweep = [(th / 2, quality(configured_graded, truth, th / 2)) for th in range(0, 14)]
    best_th, best = max(sweep, key=lambda x: x[1]["f1"])
    lines += [f"Review threshold sweep, configured model (match weight 0 to 6.5): best F1 {best['f1']:.4f} at weight >= {best_th:.1f} "
              f"(precision {best['precision']:.4f}, recall {best['recall']:.4f})."]
    lines += ["", "| review threshold (match weight) | pairs to review | false pairs | missed duplicates | precision | recall | F1 |",
              "|---|---|---|---|---|---|---|"]
    for th, q in sweep[::2] + [sweep[-1]]:  # 0, 1, ..., 6, 6.5
        tp = round(q["precision"] * q["pairs"])
        lines.append(f"| >= {th:.1f} | {q['pairs']:,} | {q['pairs'] - tp:,} | {len(truth) - tp:,} | {q['precision']:.4f} "
                     f"| {q['recall']:.4f} | {q['f1']:.4f} |")
    if len(prep) >= 1_000_000:  # measured at scale: no extrapolation
        if args.bloom:
            lines += [""] + bloom_quality(args.bloom, args.seed)
        print("\n".join(lines))
        return 0
    # Blocks share a fixed key space (names x dates), so pairs grow faster than the records:
    # count the pairs of the first half of the population too and fit pairs ~ n^alpha.
    half = prep[: len(prep) // 2]
    idx_half = blocking.index(half)
    pairs_half = sum(1 for unit in blocking.units() for _ in blocking.pairs(half, idx_half, unit))
    alpha = math.log(speed["pairs_scored"] / pairs_half, len(prep) / len(half)) if pairs_half else 1.0
    pairs_1m = speed["pairs_scored"] * (1_000_000 / len(prep)) ** alpha
    est_1m = 1_000_000 * per_rec + pairs_1m / speed["pairs_per_second"]
    lines += ["", f"Speed ({args.workers} process(es), in memory): {speed['pairs_scored']:,} candidate pairs blocked and scored in "
              f"{speed['seconds']:.1f} s = **{speed['pairs_per_second']:,.0f} pairs/s**; preparing the records "
              f"(name keys, skeletons) {per_rec * 1e6:.0f} us a record.",
              f"1M children: pairs grow as n^{alpha:.2f} (this run against its first half: {pairs_half:,} pairs), "
              f"so about {pairs_1m / 1e6:.1f}M pairs and **{est_1m / 60:.1f} min** of matching "
              "(decrypting 1M rows adds about 6 fields x 2.5 us = 15 s; reading them from PostgreSQL is not measured here)."]
    if args.bloom:
        lines += [""] + bloom_quality(args.bloom, args.seed)
    if args.registration:
        from bench.matching_registration import measure

        ratio, detail = measure()
        lines += ["", f"Registration with the duplicate check / without it: **{ratio:.2f}** ({detail})"]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
