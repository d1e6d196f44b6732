"""Estimating the model's parameters with Splink (DuckDB backend, in process, in memory).

Splink is the maintained Fellegi-Sunter implementation (UK Ministry of Justice); we use it for
the statistics: u by random sampling, m by expectation maximisation over blocked pairs, from
the custodian's own records, decrypted in memory (prepared values only: name keys, dates,
digits; see comparisons.prepare). The DuckDB database is `:memory:` and closed at the end, so
no prepared value reaches a disk; the result is probabilities only.

The comparisons are the same objects the per-record scorer uses (comparisons.COMPARISONS), given
to Splink as custom SQL levels, so the stored m and u apply identically in both.
"""

from __future__ import annotations

import logging
import math
from typing import Iterable

import duckdb

from registry.linkage import comparisons, scoring

# Blocking rules of the EM sessions: each leaves some comparisons free to be estimated.
_EM_BLOCKS = ('l."bd" = r."bd"', 'l."given_key" = r."given_key" AND l."family_key" = r."family_key"',
              'l."guardian_cnic" = r."guardian_cnic"')
# Blocking for batch prediction with Splink (the in-process dedupe blocks the same way: blocking.py)
PREDICT_BLOCKS = ('l."bd" = r."bd"', 'l."given_skel" = r."given_skel" AND substr(l."bd", 1, 4) = substr(r."bd", 1, 4)',
                  'l."guardian_cnic" = r."guardian_cnic"', 'l."phone" = r."phone"',
                  'l."guardian_skel" = r."guardian_skel" AND substr(l."bd", 1, 4) = substr(r."bd", 1, 4)',
                  'l."bd" = r."bd_swap"')


def settings(parameters: dict | None = None, *, blocking: Iterable[str] = PREDICT_BLOCKS) -> dict:
    """A Splink settings dictionary of our comparisons, with `parameters`' m and u if given."""
    comps = []
    for comp in comparisons.COMPARISONS:
        levels = []
        for lv, value in zip(comp.levels, comp.values()):
            d = {"sql_condition": lv.sql, "label_for_charts": lv.label}
            if lv.null:
                d["is_null_level"] = True
            elif parameters is not None:
                p = parameters["fields"][comp.field][str(value)]
                d["m_probability"], d["u_probability"] = p["m"], p["u"]
            levels.append(d)
        comps.append({"output_column_name": comp.field, "comparison_levels": levels})
    out = {"link_type": "dedupe_only", "unique_id_column_name": "unique_id", "comparisons": comps,
           "blocking_rules_to_generate_predictions": [{"blocking_rule": b} for b in blocking],
           "retain_intermediate_calculation_columns": False, "retain_matching_columns": False}
    if parameters is not None:
        out["probability_two_random_records_match"] = parameters["prior"]
    return out


def load(con: duckdb.DuckDBPyConnection, records: list[dict], table: str = "records") -> None:
    """Prepared records (with `unique_id`) into an in-memory DuckDB table."""
    cols = ("unique_id", *comparisons.COLUMNS)
    con.execute(f'CREATE TABLE {table} ({", ".join(f"{c} VARCHAR" for c in cols)})')
    rows = [tuple(None if r.get(c) is None else str(r[c]) for c in cols) for r in records]
    con.executemany(f'INSERT INTO {table} VALUES ({", ".join("?" for _ in cols)})', rows)


def linker(con: duckdb.DuckDBPyConnection, table: str, parameters: dict | None = None):
    from splink import Linker
    from splink.backends.duckdb import DuckDBAPI

    logging.getLogger("splink").setLevel(logging.ERROR)  # its warnings name levels only, but stay quiet
    api = DuckDBAPI(connection=con)
    return Linker(api.register(table), settings(parameters), log_level=logging.ERROR)


def estimate(records: list[dict], *, seed: int = 13, max_pairs: float = 2e6) -> dict:
    """m, u and the prior estimated from prepared records; levels Splink left without an
    estimate (none of the sampled pairs fell in them) keep the configured defaults."""
    from splink.internals.exceptions import EMTrainingException

    con = duckdb.connect(":memory:")
    try:
        load(con, records)
        lk = linker(con, "records")
        lk.training.estimate_probability_two_random_records_match(
            ['l."bd" = r."bd" AND l."given_key" = r."given_key" AND l."guardian_key" = r."guardian_key"'], recall=0.7)
        lk.training.estimate_u_using_random_sampling(max_pairs=max_pairs, seed=seed)
        for rule in _EM_BLOCKS:
            try:
                lk.training.estimate_parameters_using_expectation_maximisation(rule, record_sample_proportion=1.0)
            except (ValueError, ZeroDivisionError, EMTrainingException):  # too few pairs in this block to estimate: the others still count
                logging.getLogger("nhr.linkage").warning("linkage: one EM session had too few pairs and was skipped")
        model = lk.misc.save_model_to_json()
    finally:
        con.close()
    out = parameters_from_splink(model)
    out["prior_records"] = len(records)  # the population the estimated prior holds for (priors.py)
    return out


def parameters_from_splink(model: dict) -> dict:
    """Splink's saved model -> our parameters, level by level (matched by label); a level
    without a usable estimate keeps the configured default."""
    defaults = scoring.default_parameters()
    by_name = {c.get("output_column_name"): c for c in model.get("comparisons", [])}
    fields = {}
    for comp in comparisons.COMPARISONS:
        saved = {lv.get("label_for_charts"): lv for lv in by_name.get(comp.field, {}).get("comparison_levels", [])}
        out = {}
        for lv, value in zip(comp.levels, comp.values()):
            if value == -1:
                continue
            d = defaults["fields"][comp.field][str(value)]
            got = saved.get(lv.label, {})
            m, u = _usable(got.get("m_probability")), _usable(got.get("u_probability"))
            out[str(value)] = {"m": _clamp(m if m is not None else d["m"], M_FLOOR),
                               "u": _clamp(u if u is not None else d["u"], U_FLOOR)}
        fields[comp.field] = out
    prior = _usable(model.get("probability_two_random_records_match")) or defaults["prior"]
    return {"prior": min(prior, 0.5), "fields": fields}


def _usable(p) -> float | None:
    return float(p) if p is not None and math.isfinite(float(p)) and float(p) > 0 else None


def _clamp(p: float, floor: float) -> float:
    return min(max(float(p), floor), 1.0)


# m is floored at 0.5%: a disagreement never seen in the training data (a sex or date typo)
# must weigh against a match, not veto it. u is floored at one in a million.
M_FLOOR, U_FLOOR = 0.005, 1e-6


def splink_weights(parameters: dict, left: list[dict], right: list[dict]) -> list[tuple[float, dict]]:
    """(match weight, levels) of every left x right pair, computed by Splink with `parameters`:
    the reference the per-record scorer is tested against."""
    con = duckdb.connect(":memory:")
    try:
        load(con, left + right, "records")
        lk = linker(con, "records", parameters)
        res = lk.inference.score_pairs([_row(r) for r in left], [_row(r) for r in right])
        rows = con.execute(f"SELECT * FROM {res.physical_name}").fetchall()
        names = [d[0] for d in con.description]
    finally:
        con.close()
    out = []
    for row in rows:
        rec = dict(zip(names, row))
        out.append((rec["match_weight"], {c.field: rec.get(f"gamma_{c.field}") for c in comparisons.COMPARISONS},
                    rec["unique_id_l"], rec["unique_id_r"]))
    return out


def _row(r: dict) -> dict:
    return {c: (None if r.get(c) is None else str(r[c])) for c in ("unique_id", *comparisons.COLUMNS)}
